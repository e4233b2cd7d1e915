"""Parsing the API's loose answers: statuses, error shapes, usage, request pass-through."""

from __future__ import annotations

import pytest

from prefect_omnihuman.api.models import (
    Generation,
    Phase,
    VideoGenerationRequest,
    error_message_from_body,
    is_known_status,
)


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("queued", Phase.PENDING),
        ("waiting", Phase.PENDING),
        ("active", Phase.PENDING),
        ("processing", Phase.PENDING),
        ("generating", Phase.PENDING),
        ("completed", Phase.COMPLETED),
        ("error", Phase.ERROR),
        ("Completed", Phase.COMPLETED),
        ("rendering-v2", Phase.PENDING),
        ("", Phase.PENDING),
    ],
)
def test_every_status_maps_to_a_phase_and_unknown_ones_stay_pending(
    status: str, phase: Phase
) -> None:
    assert Generation(id="g:m", status=status).phase is phase


@pytest.mark.parametrize(
    ("status", "video", "phase"),
    [
        ("succeeded", {"url": "https://cdn.example/v.mp4"}, Phase.COMPLETED),
        ("done-v3", {"url": "https://cdn.example/v.mp4"}, Phase.COMPLETED),
        ("succeeded", None, Phase.PENDING),
        ("error", {"url": "https://cdn.example/v.mp4"}, Phase.ERROR),
    ],
)
def test_an_answer_with_a_video_is_complete_whatever_its_word(
    status: str, video: dict[str, str] | None, phase: Phase
) -> None:
    assert Generation(id="g:m", status=status, video=video).phase is phase  # type: ignore[arg-type]


def test_unknown_statuses_are_flagged_for_logging() -> None:
    assert is_known_status("generating") and not is_known_status("rendering-v2")


def test_a_completed_generation_exposes_url_duration_credits_and_model() -> None:
    generation = Generation.model_validate(
        {
            "id": "3fdd5350:bytedance/omnihuman/v1.5",
            "status": "completed",
            "video": {"url": "https://cdn.example/v.mp4", "duration": 8.2},
            "meta": {"usage": {"tokens_used": 5040000}},
            "unexpected": {"kept": True},
        }
    )
    assert generation.video_url == "https://cdn.example/v.mp4"
    assert generation.video_duration == 8.2
    assert generation.credits_used == 5040000
    assert generation.model_name == "bytedance/omnihuman/v1.5"
    credits = Generation.model_validate(
        {"id": "x", "status": "queued", "meta": {"usage": {"credits_used": 12.5}}}
    )
    assert credits.credits_used == 12.5


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"name": "GenerationError", "message": "face not found"}, "face not found"),
        ("plain text failure", "plain text failure"),
        ({"detail": [{"loc": ["body", "audio_url"], "msg": "Field required"}]}, "audio_url: Field"),
    ],
)
def test_generation_errors_in_any_shape_become_a_message(error: object, message: str) -> None:
    generation = Generation.model_validate({"id": "x", "status": "error", "error": error})
    assert generation.error is not None and message in generation.error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "BadRequest", "message": "Audio must be under 30s long"}, "under 30s"),
        (
            {
                "detail": [
                    {"loc": ["body", "image_url"], "msg": "Field required", "type": "missing"}
                ]
            },
            "image_url: Field required",
        ),
        (
            {
                "message": "Unauthorized",
                "path": "/v2/video/generations",
                "requestId": "r-1",
                "statusCode": 401,
                "timestamp": "2026-11-25T10:00:00Z",
            },
            "Unauthorized",
        ),
        ({"message": ["image_url must be a URL", "model is invalid"]}, "model is invalid"),
        ({"error": {"message": "nested"}}, "nested"),
        ("<html>Bad gateway</html>", "Bad gateway"),
        ("", "no message given"),
    ],
)
def test_error_bodies_in_any_shape_become_a_message(body: object, message: str) -> None:
    assert message in error_message_from_body(body)


def test_extra_request_fields_pass_through_and_unset_ones_stay_out() -> None:
    request = VideoGenerationRequest(
        image_url="https://a/i.png", audio_url="https://a/v.mp3", prompt="smile", resolution=None
    )
    assert request.payload() == {
        "model": "bytedance/omnihuman/v1.5",
        "image_url": "https://a/i.png",
        "audio_url": "https://a/v.mp3",
        "prompt": "smile",
    }
