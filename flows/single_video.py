"""Deployable pipeline: one portrait and one voice track in, one talking video out.

The flow is the library's `omnihuman_video` (see `prefect_omnihuman/workflows/video_flows.py`); this
file only makes it an entrypoint for `prefect deploy`: `flows/single_video.py:omnihuman_video`.
"""

from __future__ import annotations

from prefect_omnihuman import omnihuman_video

__all__ = ["omnihuman_video"]
