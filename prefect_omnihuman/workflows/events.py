"""Prefect events about generations, so automations can react without polling.

- `omnihuman.generation.submitted`: the API accepted (and charged for) a generation;
  payload `fingerprint`, `audio_seconds`, `credits_used`.
- `omnihuman.generation.completed`: its video was stored; payload `location`,
  `duration`, `size_bytes`.
- `omnihuman.generation.failed`: it ended in `error`, or its video link expired before
  it was stored; payload `error_type`, `error`.

The resource is the generation: `prefect.resource.id` is `omnihuman.generation.<id>`,
so an automation can match `omnihuman.generation.*` and read the id from
`prefect.resource.name`. Inside a flow or task run, Prefect relates the event to
that run. Payloads never hold a key, a storage secret or a presigned URL.

Example (a deployment trigger in `prefect.yaml` that publishes each stored video):
```yaml
triggers:
  - type: event
    expect: ["omnihuman.generation.completed"]
    match: {"prefect.resource.id": "omnihuman.generation.*"}
    parameters: {"video": "{{ event.payload.location }}"}
```
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event
from prefect.events.schemas.events import Event

SUBMITTED = "omnihuman.generation.submitted"
COMPLETED = "omnihuman.generation.completed"
FAILED = "omnihuman.generation.failed"
RESOURCE_PREFIX = "omnihuman.generation."


def generation_resource(generation_id: str) -> dict[str, str]:
    """The Prefect resource of a generation."""
    resource = {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{generation_id}",
        "prefect.resource.name": generation_id,
    }
    model = generation_id.partition(":")[2]
    if model:
        resource["omnihuman.model"] = model
    return resource


def _emit(name: str, generation_id: str, payload: dict[str, Any]) -> Event | None:
    return emit_event(
        event=name,
        resource=generation_resource(generation_id),
        payload={key: value for key, value in payload.items() if value is not None},
    )


def emit_submitted(
    generation_id: str,
    *,
    fingerprint: str | None = None,
    audio_seconds: float | None = None,
    credits_used: float | None = None,
) -> Event | None:
    """Announce a generation the API accepted (and charged for)."""
    return _emit(
        SUBMITTED,
        generation_id,
        {"fingerprint": fingerprint, "audio_seconds": audio_seconds, "credits_used": credits_used},
    )


def emit_completed(
    generation_id: str,
    *,
    location: str,
    duration: float | None = None,
    size_bytes: int | None = None,
) -> Event | None:
    """Announce a generation whose video is now stored at `location`."""
    return _emit(
        COMPLETED,
        generation_id,
        {"location": location, "duration": duration, "size_bytes": size_bytes},
    )


def emit_failed(generation_id: str, error: BaseException) -> Event | None:
    """Announce a generation that failed for good (its error type and message)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return _emit(FAILED, generation_id, {"error_type": type(error).__name__, "error": message})
