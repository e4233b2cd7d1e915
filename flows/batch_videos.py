"""Deployable pipeline: a manifest (CSV or JSONL) in, one talking video per row out.

The flow is the library's `omnihuman_batch` (see `prefect_omnihuman/batch.py`); this
file only makes it an entrypoint for `prefect deploy`: `flows/batch_videos.py:omnihuman_batch`.

As a script, with the key (and API root) from the environment:

    AIMLAPI_API_KEY=... omnihuman batch s3://bucket/batches/monday.csv --concurrency 4
"""

from __future__ import annotations

from prefect_omnihuman import omnihuman_batch

__all__ = ["omnihuman_batch"]
