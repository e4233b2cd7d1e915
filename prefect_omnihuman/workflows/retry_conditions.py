"""Prefect `retry_condition_fn`s: which failed task runs are worth another try.

They apply the rules of `retries` to a failed task's exception, so task-level
retries follow the same classification as the client's own. Errors that cannot heal
(bad input, 4xx, `ServiceUnreachableError` for a wrong API address) are never retried.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task

from prefect_omnihuman.api.retries import is_retryable_task_error, is_safe_to_resubmit
from prefect_omnihuman.errors import StorageError


def failure_of(state: State[Any]) -> BaseException | None:
    """The exception a failed state holds, or None."""
    try:
        state.result()
    except BaseException as error:  # any failure is inspected here, none is swallowed
        return error
    return None


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry 429, 5xx and transport failures; nothing else (not an unreachable API root)."""
    error = failure_of(state)
    return error is not None and is_retryable_task_error(error)


def retry_unaccepted_submission(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """For paid POSTs: retry only when nothing can have been accepted."""
    error = failure_of(state)
    return error is not None and is_safe_to_resubmit(error)


def retry_storage(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """For staging and delivery: storage hiccups yes, bad input or configuration no."""
    return isinstance(failure_of(state), StorageError)


def retry_speech(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """For text-to-speech: a POST that provably was not accepted, or storing the audio.

    A storage failure comes after the audio was kept locally, so the retry reuses it.
    """
    error = failure_of(state)
    return error is not None and (is_safe_to_resubmit(error) or isinstance(error, StorageError))
