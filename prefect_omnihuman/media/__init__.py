"""Media work: probing, checking, preparing, splitting and stitching audio, images and video.

- `probe`: read and check images, audio and MP4s (Pillow, PyAV; no ffmpeg binary).
- `samples`: the sample portrait and voice the demo and the tests use.
- `loudness`: loudness measurement and silence detection.
- `prep`: resize, re-encode and normalise inputs the model would refuse.
- `narration`: split long narrations at pauses and stitch the parts' videos.
- `input_checks`: check a run's image and audio before any credit is spent.
- `poster`: a contact sheet and a thumbnail of a video, as small JPEGs for UIs.

May import: `prefect_omnihuman.errors`, `prefect_omnihuman.results`, `api.models` and
`storage` (to read inputs where they live). Never Prefect tasks or flows.
"""
