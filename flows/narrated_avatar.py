"""Deployable pipeline: a script and a portrait in, a talking video out.

text -> speech (`synthesize_speech`) -> prepared portrait and voice -> `omnihuman_video`
(which splits a narration of 30 s or more into parts). Everything is the library's;
this file only wires settings in.

As a script, with the key (and API root) from the environment:

    AIMLAPI_API_KEY=... python flows/narrated_avatar.py --image face.jpg \\
        --text "Hello, I am Ada." --out video.mp4 --stage s3://bucket/omnihuman

As a deployment: entrypoint `flows/narrated_avatar.py:narrated_avatar`, with saved
blocks named in `credentials_block` and `storage_block` (or the environment).
"""

from __future__ import annotations

import argparse

from prefect import flow

from prefect_omnihuman import (
    DEFAULT_TTS_MODEL,
    omnihuman_narrated_video,
)
from prefect_omnihuman.workflows.block_loading import credentials_from, polling_capped, storage_from


@flow(name="narrated-avatar")
def narrated_avatar(
    text: str,
    image: str,
    destination: str | None = None,
    voice: str | None = None,
    tts_model: str = DEFAULT_TTS_MODEL,
    credentials_block: str | None = None,
    storage_block: str | None = None,
    staging_url: str | None = None,
    staging_public_url: str | None = None,
    max_poll_interval: float | None = None,
) -> str:
    """Speak `text` with the portrait `image`; returns where the MP4 is stored.

    Credentials: the saved block `credentials_block`, else AIMLAPI_API_KEY (and
    AIMLAPI_BASE_URL). Storage: the saved block `storage_block`, else `staging_url`
    (an fsspec URL; `staging_public_url` is the HTTP address serving it, if it cannot
    presign). The video goes to `destination`, else under the storage's `videos/`.
    `max_poll_interval` caps the seconds between status checks (default: adaptive).
    """
    credentials = credentials_from(credentials_block)
    storage = storage_from(storage_block, url=staging_url, public_url=staging_public_url)
    result = omnihuman_narrated_video(
        text=text,
        image=image,
        destination=destination,
        credentials=credentials,
        storage=storage,
        voice=voice,
        tts_model=tts_model,
        polling=polling_capped(max_poll_interval),
    )
    return result.location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", required=True, help="What the avatar says.")
    parser.add_argument("--image", required=True, help="Portrait: path, s3:// or http(s) URL.")
    parser.add_argument("--out", help="Where to store the MP4 (path or fsspec URL).")
    parser.add_argument("--voice", help="Text-to-speech voice.")
    parser.add_argument("--tts-model", default=DEFAULT_TTS_MODEL, help="Text-to-speech model.")
    parser.add_argument("--stage", help="fsspec URL to stage files in (e.g. s3://bucket/in).")
    parser.add_argument("--stage-public-url", help="HTTP URL that serves --stage.")
    parser.add_argument("--credentials-block", help="Saved AimlApiCredentials block name.")
    parser.add_argument("--storage-block", help="Saved MediaStorage block name.")
    parser.add_argument(
        "--max-poll-interval", type=float, help="Most seconds between status checks."
    )
    args = parser.parse_args()
    print(
        narrated_avatar(
            text=args.text,
            image=args.image,
            destination=args.out,
            voice=args.voice,
            tts_model=args.tts_model,
            credentials_block=args.credentials_block,
            storage_block=args.storage_block,
            staging_url=args.stage,
            staging_public_url=args.stage_public_url,
            max_poll_interval=args.max_poll_interval,
        )
    )


if __name__ == "__main__":
    main()
