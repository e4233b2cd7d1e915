"""Which failures are retried, and how long to wait: the one place that decides.

Two questions are kept apart:

- *Is it transient?* 429, 5xx and transport failures are; 400/401/403/404/422, a
  generation in `error`, bad input and an API root that was never reachable
  (`ServiceUnreachableError`: a wrong address) are not.
- *Is it safe to repeat?* A GET always is. A POST creates a paid generation, so it
  is repeated only when the request provably was not accepted: the connection was
  refused before anything was sent, or the service answered 429 or 503.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from prefect_omnihuman.errors import (
    AmbiguousSubmissionError,
    ApiError,
    RateLimitError,
    ServerError,
    ServiceUnreachableError,
    TransportError,
)

#: 5xx answers that mean "not accepted, try later" rather than "failed while working".
NOT_ACCEPTED_SERVER_STATUSES = frozenset({503})


def is_transient(error: BaseException) -> bool:
    """Whether repeating the same idempotent request later may succeed."""
    if isinstance(error, ServiceUnreachableError):
        return False
    return isinstance(error, RateLimitError | ServerError | TransportError)


def is_safe_to_resubmit(error: BaseException) -> bool:
    """Whether a failed POST provably created nothing, so sending it again cannot pay twice."""
    if isinstance(error, RateLimitError):
        return True
    if isinstance(error, ServerError):
        return error.status_code in NOT_ACCEPTED_SERVER_STATUSES
    if isinstance(error, ServiceUnreachableError):
        return False  # nothing was sent, but sending it again cannot reach anyone either
    if isinstance(error, TransportError):
        return not error.sent
    return False


def as_submission_error(error: Exception) -> Exception:
    """Turn a POST failure that may have been accepted into `AmbiguousSubmissionError`."""
    if is_safe_to_resubmit(error) or not is_transient(error):
        return error
    if isinstance(error, ApiError):
        return AmbiguousSubmissionError(f"HTTP {error.status_code}: {error.message}")
    return AmbiguousSubmissionError(str(error))


def is_retryable_task_error(error: BaseException) -> bool:
    """For Prefect `retry_condition_fn`: retry transient failures, never permanent ones.

    `AmbiguousSubmissionError` is not transient: retrying it could pay twice.
    """
    return is_transient(error)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter that honours `Retry-After`.

    Attributes:
        max_attempts: Total tries of one request, the first included.
        base_delay: Seconds before the first retry, doubled each retry.
        max_delay: Upper bound of one backoff delay.
        jitter: Fraction of each delay drawn at random, so many clients spread out.
        max_retry_after: Upper bound on a server's `Retry-After` that is honoured.

    Example:
        ```python
        client = OmniHumanClient(api_key, retry=RetryPolicy(max_attempts=8))
        ```
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 300.0

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after the `attempt`-th failure (1-based)."""
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after >= 0:
            # A little jitter on top, so clients told the same moment do not all return at once.
            wait = min(float(retry_after), self.max_retry_after)
            return wait * (1 + random.random() * 0.1)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return backoff * (1 - self.jitter) + backoff * self.jitter * random.random()


NO_RETRIES = RetryPolicy(max_attempts=1)
