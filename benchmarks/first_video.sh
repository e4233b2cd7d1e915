#!/usr/bin/env bash
# Time to first video: a fresh clone, `make install` (timed, excluded), then `make demo` (timed).
#
#     benchmarks/first_video.sh [REPO]      # REPO defaults to this checkout
#
# As CI does, the clone gets `../shared` beside it. Installs come from whatever package index
# this machine is configured with (pip's own settings); nothing here reaches for the network.
# Target: `make demo` in a fresh clone <= 60 s, ending with a playable MP4.
set -euo pipefail

repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
target=60
tmp=$(mktemp -d "${TMPDIR:-/tmp}/omnihuman-first-video-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

git clone -q "$repo" "$tmp/main"
if [ -d "$repo/../shared" ]; then cp -r "$repo/../shared" "$tmp/"; fi
cd "$tmp/main"

start=$(now)
make install >"$tmp/install.log" 2>&1 || { tail -20 "$tmp/install.log"; exit 1; }
install=$(seconds "$start" "$(now)")

start=$(now)
make demo >"$tmp/demo.log" 2>&1 || { tail -20 "$tmp/demo.log"; exit 1; }
demo=$(seconds "$start" "$(now)")

video=$(find demo-output -maxdepth 1 -name '*.mp4' | head -1)
[ -n "$video" ] || { echo "no MP4 in demo-output/"; tail -20 "$tmp/demo.log"; exit 1; }
probe=$(.venv/bin/python - "$video" <<'EOF'
import sys

import av

with av.open(sys.argv[1]) as container:
    video, audio = container.streams.video[0], container.streams.audio[0]
    seconds = float(container.duration or 0) / av.time_base
    print(f"{seconds:.2f} s, {video.width}x{video.height}, {video.codec_context.name} + "
          f"{audio.codec_context.name}")
EOF
)

verdict=$(awk -v d="$demo" -v t="$target" 'BEGIN { print (d <= t) ? "PASS" : "MISS" }')
echo "fresh clone          $repo -> $tmp/main (../shared copied beside it)"
echo "make install         $install s (excluded)"
echo "make demo            $demo s"
echo "video                $(basename "$video"): $probe"
echo "target               make demo <= $target s: $verdict"
