"""Deployable pipeline: a long narration and a portrait in, one talking video out.

The voice track is prepared (silence trimmed, loudness normalised), then
`omnihuman_video` cuts it at pauses into parts under the model's 30 s limit,
generates them concurrently (one paid generation each) and stitches the parts'
videos over the whole narration. This file only wires settings in.

As a script, with the key (and API root) from the environment:

    AIMLAPI_API_KEY=... python flows/long_narration.py --image face.png \\
        --audio talk.mp3 --out talk.mp4 --stage s3://bucket/omnihuman

As a deployment: entrypoint `flows/long_narration.py:long_narration`.
"""

from __future__ import annotations

import argparse

from prefect import flow
from prefect.logging import get_run_logger

from prefect_omnihuman import (
    omnihuman_video,
    prepare_audio,
    prepare_image,
)
from prefect_omnihuman.workflows.block_loading import credentials_from, polling_capped, storage_from


@flow(name="long-narration")
def long_narration(
    audio: str,
    image: str,
    destination: str | None = None,
    prepare: bool = True,
    credentials_block: str | None = None,
    storage_block: str | None = None,
    staging_url: str | None = None,
    staging_public_url: str | None = None,
    max_poll_interval: float | None = None,
) -> str:
    """Make one video of `image` speaking `audio`, however long; returns where it is stored.

    Credentials and storage as in `flows/narrated_avatar.py`; storage is needed, since
    the parts are new files the API fetches. `max_poll_interval` caps the seconds
    between status checks (default: adaptive).
    """
    credentials = credentials_from(credentials_block)
    storage = storage_from(storage_block, url=staging_url, public_url=staging_public_url)
    if prepare:
        audio = prepare_audio(audio, storage).location
        image = prepare_image(image, storage).location
    result = omnihuman_video(
        image=image,
        audio=audio,
        destination=destination,
        credentials=credentials,
        storage=storage,
        polling=polling_capped(max_poll_interval),
    )
    get_run_logger().info(
        "%d part(s), %s credits: %s",
        len(result.segments) or 1,
        result.credits_used,
        ", ".join(s.generation_id for s in result.segments) or result.generation_id,
    )
    return result.location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", required=True, help="Narration: path, s3:// or http(s) URL.")
    parser.add_argument("--image", required=True, help="Portrait: path, s3:// or http(s) URL.")
    parser.add_argument("--out", help="Where to store the MP4 (path or fsspec URL).")
    parser.add_argument("--no-prepare", action="store_true", help="Use the files as they are.")
    parser.add_argument("--stage", help="fsspec URL to stage files in (e.g. s3://bucket/in).")
    parser.add_argument("--stage-public-url", help="HTTP URL that serves --stage.")
    parser.add_argument("--credentials-block", help="Saved AimlApiCredentials block name.")
    parser.add_argument("--storage-block", help="Saved MediaStorage block name.")
    parser.add_argument(
        "--max-poll-interval", type=float, help="Most seconds between status checks."
    )
    args = parser.parse_args()
    print(
        long_narration(
            audio=args.audio,
            image=args.image,
            destination=args.out,
            prepare=not args.no_prepare,
            credentials_block=args.credentials_block,
            storage_block=args.storage_block,
            staging_url=args.stage,
            staging_public_url=args.stage_public_url,
            max_poll_interval=args.max_poll_interval,
        )
    )


if __name__ == "__main__":
    main()
