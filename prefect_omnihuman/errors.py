"""The exceptions prefect-omnihuman raises, as one tree callers can catch from.

```
OmniHumanError
├── InputError                    bad input, found before any credit is spent
│   ├── InvalidImageError
│   ├── InvalidAudioError
│   ├── StagingRequiredError      a local file the API cannot fetch without staging
│   ├── ManifestError             a batch manifest (or one of its rows) is unusable
│   └── BudgetExceededError       a batch would cost more than its budget allows
├── ApiError                      the API answered with an error status
│   ├── AuthenticationError       401: missing or wrong API key
│   ├── InsufficientCreditsError  403: the account is out of credits or not allowed
│   ├── NotFoundError             404: unknown generation id or route
│   ├── InvalidRequestError       400/422: the API rejected the request (its message kept)
│   ├── RateLimitError            429: too many requests or generations (retry_after kept)
│   └── ServerError               5xx
├── TransportError                the request never got an answer (refused, dropped, timed out)
│   └── ServiceUnreachableError   the API root was never reached: refused, or its host unknown
├── AmbiguousSubmissionError      a POST failed after it was sent: it may have been accepted
├── GenerationFailedError         a generation ended in status `error`
├── GenerationTimeoutError        waiting for a generation took longer than allowed
├── ResultExpiredError            the temporary video URL no longer serves the video
├── InvalidVideoError             the downloaded file is not a playable video
├── StorageError                  staging or delivery storage failed (retried: may be transient)
└── LedgerError                   the generation ledger in the user's storage stopped a run
    ├── LedgerRecordError         a ledger record cannot be parsed: nothing is paid until fixed
    ├── LedgerWriteError          a paid generation could not be recorded (its id is kept)
    └── ClaimWaitTimeoutError     another worker held the claim on these inputs for too long
```

No exception text ever contains the API key: messages are built from the server's
answer and our own words only, never from request headers.
"""

from __future__ import annotations


class OmniHumanError(Exception):
    """Base class of every error raised by prefect-omnihuman."""


class InputError(OmniHumanError, ValueError):
    """An input is unusable; raised before anything is submitted or paid for.

    Attributes:
        source: The file or URL at fault, as the user gave it.
        fix: What to do about it.
    """

    def __init__(self, message: str, *, source: str | None = None, fix: str | None = None):
        self.source = source
        self.fix = fix
        text = f"{source}: {message}" if source else message
        if fix:
            text = f"{text.rstrip('. ')}. Fix: {fix}"
        super().__init__(text)


class InvalidImageError(InputError):
    """The portrait image cannot be decoded or is unsuitable."""


class InvalidAudioError(InputError):
    """The voice track cannot be decoded, is empty, or is too long."""


class StagingRequiredError(InputError):
    """A local file has to be uploaded somewhere the API can fetch it from."""


class ManifestError(InputError):
    """A batch manifest cannot be read, or one of its rows is unusable.

    Attributes:
        row: The 1-based data row at fault (None when the whole manifest is).
    """

    def __init__(
        self,
        message: str,
        *,
        row: int | None = None,
        source: str | None = None,
        fix: str | None = None,
    ):
        self.row = row
        super().__init__(f"row {row}: {message}" if row else message, source=source, fix=fix)


class BudgetExceededError(InputError):
    """A batch would spend more than its budget; nothing was submitted.

    Attributes:
        estimated_seconds: Seconds of audio the batch would newly pay for.
        estimated_credits: Credits that audio would cost.
        estimated_usd: Those credits in US dollars, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        estimated_seconds: float,
        estimated_credits: float,
        estimated_usd: float | None = None,
    ):
        self.estimated_seconds = estimated_seconds
        self.estimated_credits = estimated_credits
        self.estimated_usd = estimated_usd
        super().__init__(
            message,
            fix="raise the budget, split the manifest, or remove rows; nothing was submitted",
        )


class ApiError(OmniHumanError):
    """The AI/ML API answered with an error status.

    Attributes:
        status_code: The HTTP status.
        message: The server's own message, as readable as the payload allowed.
        request_id: The server's request id, when it sent one.
        retry_after: Seconds the server asked us to wait (`Retry-After`), when it said.
        fix: What to do about it, when the status alone says (a wrong key, an empty balance).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        retry_after: float | None = None,
        fix: str | None = None,
    ):
        self.status_code = status_code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.fix = fix
        suffix = f" (request id {request_id})" if request_id else ""
        text = f"HTTP {status_code}: {message}{suffix}"
        if fix:
            text = f"{text.rstrip('. ')}. Fix: {fix}"
        super().__init__(text)


class AuthenticationError(ApiError):
    """401: the API key is missing, wrong or revoked. Not retried."""


class InsufficientCreditsError(ApiError):
    """403: the account cannot pay for this generation. Not retried."""


class NotFoundError(ApiError):
    """404: the generation id or route is unknown. Not retried."""


class InvalidRequestError(ApiError):
    """400/422: the API rejected the request itself. Not retried."""


class RateLimitError(ApiError):
    """429: too many requests or concurrent generations. Retried after `retry_after`."""


class ServerError(ApiError):
    """5xx: the service failed. Retried where that cannot submit twice."""


class TransportError(OmniHumanError):
    """The request got no HTTP answer: connection refused or dropped, or a timeout.

    Attributes:
        sent: Whether the request may have reached the server.
    """

    def __init__(self, message: str, *, sent: bool):
        self.sent = sent
        super().__init__(message)


class ServiceUnreachableError(TransportError):
    """The API root cannot be reached at all: a wrong address, so waiting cannot help.

    Raised when the first contact with the API root in this process is refused, or
    when its host name does not resolve. Never retried. Once the service has answered
    in this process, a refused connection is a `TransportError` (retried) instead.

    Attributes:
        base_url: The API root that could not be reached.
        reason: What happened (refused, or the host does not resolve).
    """

    def __init__(self, base_url: str, reason: str):
        self.base_url = base_url
        self.reason = reason
        super().__init__(
            f"Cannot reach the AI/ML API at {base_url}: {reason}. Fix: check the API root "
            f"given by --base-url or AIMLAPI_BASE_URL (or the AimlApiCredentials block's "
            f"base_url); the real API is https://api.aimlapi.com",
            sent=False,
        )


class AmbiguousSubmissionError(OmniHumanError):
    """A submission failed after its body was sent, so it may have been accepted.

    Retrying could pay for the same video twice, so it is never retried
    automatically. Check the AI/ML API dashboard for a generation made at
    that time before submitting again (`force_new=True`).

    Attributes:
        cause: What happened (status code or transport failure).
    """

    def __init__(self, cause: str):
        self.cause = cause
        super().__init__(
            f"The submission may have been accepted and charged, but no answer came back "
            f"({cause}). It was not retried, so as not to pay twice. Check the AI/ML API "
            f"dashboard for a generation started at this time before submitting again; "
            f"to submit anyway, re-run with force_new=True."
        )


class SpeechDownloadError(OmniHumanError):
    """Speech was made (and paid for) but its audio could not be downloaded.

    Not retried by the speech task: a retry would pay for the speech again.
    """

    def __init__(self, cause: str):
        self.cause = cause
        super().__init__(
            f"The text-to-speech service made (and charged) the speech, but its audio could "
            f"not be downloaded after every retry ({cause}). Fix: re-run when the service is "
            f"reachable again; that pays for the speech once more."
        )


class GenerationFailedError(OmniHumanError):
    """The generation ended in status `error`. Not retried: the same inputs fail again.

    Attributes:
        generation_id: The failed generation's id.
        message: The API's error message.
    """

    def __init__(self, generation_id: str, message: str):
        self.generation_id = generation_id
        self.message = message
        super().__init__(
            f"Generation {generation_id} failed: {message}. Re-running the same inputs reports "
            f"this failure again at no charge; check the inputs, or pass force_new=True to pay "
            f"for a new attempt."
        )


class GenerationTimeoutError(OmniHumanError):
    """Waiting for a generation exceeded the allowed time; the generation may still finish.

    Attributes:
        generation_id: The id to resume from (re-running the flow resumes it).
        waited: Seconds waited.
        last_status: The last status the API reported.
    """

    def __init__(self, generation_id: str, waited: float, last_status: str):
        self.generation_id = generation_id
        self.waited = waited
        self.last_status = last_status
        super().__init__(
            f"Generation {generation_id} was still {last_status!r} after {waited:.0f} s. "
            f"It may still finish: re-run the same flow to resume waiting (no new charge), "
            f"or raise the timeout."
        )


class ResultExpiredError(OmniHumanError):
    """The temporary video URL expired before the video was stored.

    Attributes:
        generation_id: The generation whose video URL expired.
    """

    def __init__(self, generation_id: str, status_code: int | None = None):
        self.generation_id = generation_id
        self.status_code = status_code
        got = f" (HTTP {status_code})" if status_code else ""
        super().__init__(
            f"The video URL of generation {generation_id} no longer serves the video{got}: "
            f"the API's result links are temporary and this one has expired, so the video "
            f"cannot be downloaded any more. Generate it again with force_new=True (a new "
            f"charge); the flow downloads as soon as a generation completes to avoid this."
        )


class InvalidVideoError(OmniHumanError):
    """A downloaded result is not a playable MP4 with video and audio."""


class StorageError(OmniHumanError):
    """Reading or writing staged inputs or delivered videos failed; may be transient.

    Attributes:
        location: The path or URL involved (without query strings).
    """

    def __init__(self, message: str, *, location: str):
        self.location = location
        super().__init__(f"{location}: {message}")


class LedgerError(OmniHumanError):
    """The generation ledger (`<storage>/ledger/`) stopped a run; never retried by tasks."""


class LedgerRecordError(LedgerError):
    """A ledger record cannot be parsed. No generation is paid for until it is fixed.

    Attributes:
        location: The record's URL.
    """

    def __init__(self, location: str, reason: str):
        self.location = location
        super().__init__(
            f"{location}: the ledger record cannot be parsed ({reason}), so whether these "
            f"inputs were already paid for is unknown; nothing was submitted. Fix: look at "
            f"the file (`omnihuman ledger show`), then repair or delete it."
        )


class LedgerWriteError(LedgerError):
    """A paid generation could not be recorded in the ledger, even after retries.

    Attributes:
        generation_id: The paid generation, to recover with `omnihuman download ID`.
        location: The record's URL.
    """

    def __init__(self, generation_id: str, location: str, cause: str):
        self.generation_id = generation_id
        self.location = location
        super().__init__(
            f"Generation {generation_id} was accepted (and charged), but recording it at "
            f"{location} failed ({cause}). Fix: when the storage is back, fetch the video "
            f"with `omnihuman download {generation_id} --out ...`; re-running these inputs "
            f"before that may pay again."
        )


class ClaimWaitTimeoutError(LedgerError):
    """Another worker claimed the same inputs and recorded nothing within the wait bound.

    Attributes:
        fingerprint: The inputs' fingerprint.
        holder: Who holds the claim (host and process).
    """

    def __init__(self, fingerprint: str, holder: str, waited: float):
        self.fingerprint = fingerprint
        self.holder = holder
        super().__init__(
            f"Another worker ({holder}) is submitting these inputs (fingerprint "
            f"{fingerprint[:16]}...) and recorded no generation in {waited:.0f} s; nothing "
            f"was submitted here, so as not to pay twice. Fix: re-run later, or raise "
            f"OMNIHUMAN_CLAIM_WAIT_SECONDS."
        )
