"""What the ledger says was spent: generations, seconds, credits and suspected duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pydantic import BaseModel, computed_field

from prefect_omnihuman.api.pricing import CREDITS_PER_USD
from prefect_omnihuman.results import LedgerRecord


class SpendLine(BaseModel):
    """One day's spend on one model (or a total when `day` and `model` are "all")."""

    day: str
    model: str
    generations: int = 0
    audio_seconds: float = 0.0
    credits: float = 0.0
    suspected_duplicates: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        """The credits in US dollars at the API's published rate."""
        return round(self.credits / CREDITS_PER_USD, 4)

    def add(self, record: LedgerRecord) -> None:
        """Count `record` in this line."""
        self.generations += 1 if record.generation_id else 0
        self.audio_seconds += record.audio_seconds or 0.0
        self.credits += record.credits or 0.0
        self.suspected_duplicates += 1 if record.suspected_duplicate else 0


def spend_by_day_and_model(records: Iterable[LedgerRecord]) -> list[SpendLine]:
    """Spend per (UTC day, model), newest day first, then a total line."""
    lines: dict[tuple[str, str], SpendLine] = {}
    total = SpendLine(day="all", model="all")
    for record in records:
        day = dt.datetime.fromtimestamp(record.submitted_at, dt.timezone.utc).date().isoformat()
        line = lines.setdefault((day, record.model), SpendLine(day=day, model=record.model))
        line.add(record)
        total.add(record)
    ordered = sorted(lines.values(), key=lambda line: (line.day, line.model), reverse=True)
    return [*ordered, total]
