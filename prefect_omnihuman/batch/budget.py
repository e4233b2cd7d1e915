"""What a batch would cost, estimated before anything is submitted, and the guard on it.

OmniHuman is billed by the second of audio. The AI/ML API reports usage as
`tokens_used`, 630,000 per second of audio (the API documentation's own example
answers 5,040,000 for an 8-second clip; the emulator uses the same rate), which
this package reports as `credits_used`. So the estimate is:

- audio rows: the exact duration of the voice track (decoded with PyAV);
- text rows: the text's length at `SPEECH_CHARS_PER_SECOND` characters per
  second (an average speaking pace; the real narration may differ, and the
  text-to-speech call's own cost is not included);
- credits: seconds x `CREDITS_PER_AUDIO_SECOND`;
- dollars: credits / `credits_per_usd` (the API's published 2,000,000 credits to
  $1, or the credentials block's own rate).

Only what a run would newly pay for counts: rows whose generation was already
submitted (its record is in Prefect's result storage) and repeats of identical
inputs in the same manifest are left out.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from prefect_omnihuman.api.pricing import (
    CREDITS_PER_USD,
    format_cost,
    format_credits,
    format_usd,
    usd_to_credits,
)
from prefect_omnihuman.batch.manifest import ManifestRow
from prefect_omnihuman.errors import BudgetExceededError
from prefect_omnihuman.media.input_checks import check_inputs
from prefect_omnihuman.results import generation_fingerprint
from prefect_omnihuman.storage.media_storage import MediaStorage

CREDITS_PER_AUDIO_SECOND = 630_000.0
SPEECH_CHARS_PER_SECOND = 15.0


class RowCost(BaseModel):
    """What one row would cost."""

    row: int
    audio_seconds: float
    fingerprint: str | None = Field(
        default=None, description="Identity of the paid generation (audio rows only)."
    )
    estimated: bool = Field(default=False, description="True when guessed from text length.")
    already_paid: bool = False


class BudgetEstimate(BaseModel):
    """What a batch would newly spend.

    Example:
        ```python
        estimate = estimate_budget(costs)
        print(estimate.describe())
        # "12 new generation(s), 38.4 s of audio, ~24,192,000 credits ($12.10) (...)"
        ```
    """

    audio_seconds: float = 0.0
    credits: float = 0.0
    credits_per_usd: float = Field(CREDITS_PER_USD, description="The rate for `usd`.")
    generations: int = Field(0, description="Generations that would be paid for.")
    already_paid: int = Field(0, description="Rows whose generation exists already.")
    duplicates: int = Field(0, description="Rows repeating another row's inputs.")
    text_rows: int = Field(0, description="Rows whose seconds are guessed from their text.")

    @property
    def usd(self) -> float:
        """The estimated credits in US dollars."""
        return self.credits / self.credits_per_usd

    def describe(self) -> str:
        """One line for logs and messages."""
        guessed = f", {self.text_rows} estimated from text" if self.text_rows else ""
        cost = format_cost(self.credits, self.credits_per_usd)
        return (
            f"{self.generations} new generation(s), {self.audio_seconds:.1f} s of audio, "
            f"~{cost} ({self.already_paid} already paid, "
            f"{self.duplicates} duplicate(s){guessed})"
        )


def text_seconds(text: str) -> float:
    """A spoken length estimate for `text`, in seconds."""
    return round(len(" ".join(text.split())) / SPEECH_CHARS_PER_SECOND, 2)


def cost_of_row(
    row: ManifestRow,
    storage: MediaStorage | None,
    *,
    service: str,
    is_paid: Callable[[str], bool] = lambda fingerprint: False,
) -> RowCost:
    """Decode the row's inputs (raising their `InputError`) and price it.

    `is_paid(fingerprint)` says whether that generation was submitted before.
    """
    if row.text is not None or row.audio is None:
        return RowCost(row=row.row, audio_seconds=text_seconds(row.text or ""), estimated=True)
    # Long voice tracks are split into parts of under 30 s, so no length limit here.
    checked = check_inputs(row.image, row.audio, storage, audio_limit=None)
    fingerprint = generation_fingerprint(
        checked, model=row.model, params=row.model_params, service=service
    )
    return RowCost(
        row=row.row,
        audio_seconds=checked.audio.duration or 0.0,
        fingerprint=fingerprint,
        already_paid=is_paid(fingerprint),
    )


def estimate_budget(
    costs: list[RowCost],
    *,
    credits_per_audio_second: float = CREDITS_PER_AUDIO_SECOND,
    credits_per_usd: float = CREDITS_PER_USD,
) -> BudgetEstimate:
    """Sum what the rows would newly pay for (each distinct generation once)."""
    estimate = BudgetEstimate(credits_per_usd=credits_per_usd)
    seen: set[str] = set()
    for cost in costs:
        if cost.fingerprint is not None and cost.fingerprint in seen:
            estimate.duplicates += 1
            continue
        if cost.fingerprint is not None:
            seen.add(cost.fingerprint)
        if cost.already_paid:
            estimate.already_paid += 1
            continue
        estimate.generations += 1
        estimate.text_rows += cost.estimated
        estimate.audio_seconds += cost.audio_seconds
    estimate.audio_seconds = round(estimate.audio_seconds, 3)
    estimate.credits = round(estimate.audio_seconds * credits_per_audio_second, 1)
    return estimate


def check_budget(
    estimate: BudgetEstimate,
    *,
    max_seconds: float | None = None,
    max_credits: float | None = None,
    max_usd: float | None = None,
) -> None:
    """Raise `BudgetExceededError` when the estimate is over any maximum.

    Dollars are converted at the estimate's `credits_per_usd`.

    Example:
        ```python
        check_budget(estimate, max_seconds=600)  # refuses a batch of more than 10 minutes
        check_budget(estimate, max_usd=25)  # refuses one that would cost more than $25
        ```
    """
    rate = estimate.credits_per_usd
    over = []
    if max_seconds is not None and estimate.audio_seconds > max_seconds:
        over.append(f"{estimate.audio_seconds:.1f} s of audio > budget {max_seconds:g} s")
    if max_credits is not None and estimate.credits > max_credits:
        budget = format_cost(max_credits, rate)
        over.append(f"~{format_cost(estimate.credits, rate)} > budget {budget}")
    if max_usd is not None and estimate.usd > max_usd:
        budget = f"{format_usd(max_usd)} ({format_credits(usd_to_credits(max_usd, rate))} credits)"
        spend = f"{format_usd(estimate.usd)} ({format_credits(estimate.credits)} credits)"
        over.append(f"~{spend} > budget {budget}")
    if over:
        raise BudgetExceededError(
            f"the batch would cost more than its budget: {'; '.join(over)} "
            f"({estimate.describe()}).",
            estimated_seconds=estimate.audio_seconds,
            estimated_credits=estimate.credits,
            estimated_usd=estimate.usd,
        )
