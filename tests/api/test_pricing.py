"""Credits in dollars: the API's published rate, an account's own rate, readable figures."""

from __future__ import annotations

import pytest

from prefect_omnihuman.api.pricing import (
    CREDITS_PER_USD,
    credits_to_usd,
    format_cost,
    format_credits,
    format_reused_cost,
    format_usd,
    usd_to_credits,
)


def test_the_published_rate_is_two_million_credits_to_the_dollar() -> None:
    assert CREDITS_PER_USD == 2_000_000
    assert credits_to_usd(5_040_000) == pytest.approx(2.52)
    assert usd_to_credits(2.52) == pytest.approx(5_040_000)
    assert credits_to_usd(None) is None


def test_another_rate_converts_both_ways() -> None:
    assert credits_to_usd(5_040_000, credits_per_usd=1_000_000) == pytest.approx(5.04)
    assert usd_to_credits(10, credits_per_usd=1_500_000) == pytest.approx(15_000_000)
    for amount in (0.0, 0.01, 3.7, 1234.56):
        assert credits_to_usd(usd_to_credits(amount, 1_234_567), 1_234_567) == pytest.approx(amount)


@pytest.mark.parametrize("rate", [0, -2_000_000, float("nan")])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="credits_per_usd must be above 0"):
        credits_to_usd(1_000, rate)
    with pytest.raises(ValueError, match="credits_per_usd"):
        usd_to_credits(1, rate)


@pytest.mark.parametrize(
    ("credits", "text"),
    [
        (5_040_000, "5,040,000 credits ($2.52)"),
        (5_040_000.0, "5,040,000 credits ($2.52)"),
        (24_192_000.0, "24,192,000 credits ($12.10)"),
        (2_268_000.0, "2,268,000 credits ($1.13)"),
        (0, "0 credits ($0.00)"),
        (1_234.5, "1,234.5 credits ($0.00062)"),
        (6_300, "6,300 credits ($0.0032)"),
        (100, "100 credits ($0.00005)"),
        (4_000_000_000, "4,000,000,000 credits ($2,000.00)"),
        (None, "n/a"),
    ],
)
def test_costs_read_as_grouped_credits_and_dollars(credits: float | None, text: str) -> None:
    assert format_cost(credits) == text
    assert "e+" not in text and "e-" not in text


def test_formatting_pieces() -> None:
    assert format_credits(5_040_000.0) == "5,040,000"
    assert format_credits(1_000_000.25) == "1,000,000.25"
    assert format_usd(2.52) == "$2.52"
    assert format_usd(-2.5) == "-$2.50"
    assert format_usd(0.004) == "$0.004"  # under a cent never reads as free
    assert format_cost(5_040_000, credits_per_usd=1_000_000) == "5,040,000 credits ($5.04)"


def test_a_reused_generation_cost_nothing_now() -> None:
    assert (
        format_reused_cost(5_040_000)
        == "0 credits now ($0.00); paid earlier: 5,040,000 credits ($2.52)"
    )
    assert format_reused_cost(None) == "0 credits now ($0.00); paid earlier: n/a"
    assert (
        format_reused_cost(2_000_000, 1_000_000, now=500_000)
        == "500,000 credits now ($0.50); paid earlier: 2,000,000 credits ($2.00)"
    )
