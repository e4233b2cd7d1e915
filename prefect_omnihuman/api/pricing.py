"""Credits in US dollars, and costs written so people can read them.

The AI/ML API bills in credits and publishes their price as 2,000,000 credits to
one US dollar (`CREDITS_PER_USD`); the credentials block can override the rate
(`AimlApiCredentials.credits_per_usd`) for an account that pays another. Pure
functions, no Prefect: artifacts, the command line, results and the ledger's
spend report all format through `format_cost`, so a cost reads the same everywhere:

    >>> format_cost(5_040_000)
    '5,040,000 credits ($2.52)'
    >>> format_cost(None)
    'n/a'
    >>> format_reused_cost(5_040_000)
    '0 credits now ($0.00); paid earlier: 5,040,000 credits ($2.52)'
"""

from __future__ import annotations

import math

#: The API's published rate: credits per US dollar.
CREDITS_PER_USD = 2_000_000.0


def _check_rate(credits_per_usd: float) -> float:
    if not credits_per_usd > 0:
        raise ValueError(f"credits_per_usd must be above 0, not {credits_per_usd!r}")
    return credits_per_usd


def credits_to_usd(credits: float | None, credits_per_usd: float = CREDITS_PER_USD) -> float | None:
    """US dollars for `credits` at `credits_per_usd`; None stays None (cost unknown).

    Example:
        ```python
        credits_to_usd(5_040_000)  # 2.52
        ```
    """
    if credits is None:
        return None
    return credits / _check_rate(credits_per_usd)


def usd_to_credits(usd: float, credits_per_usd: float = CREDITS_PER_USD) -> float:
    """Credits that `usd` US dollars buy at `credits_per_usd`.

    Example:
        ```python
        usd_to_credits(10)  # 20_000_000.0
        ```
    """
    return usd * _check_rate(credits_per_usd)


def format_credits(credits: float) -> str:
    """`5040000.0` as `5,040,000`; a fraction keeps up to two decimals (`1,234.5`)."""
    text = f"{credits:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_usd(usd: float) -> str:
    """Dollars to the cent (`$2.52`); amounts under a cent keep two significant digits
    (`$0.0032`), so a small cost never reads as free."""
    if usd < 0:
        return f"-{format_usd(-usd)}"
    if 0 < usd < 0.005:
        decimals = min(-math.floor(math.log10(usd)) + 1, 10)
        return "$" + f"{usd:.{decimals}f}".rstrip("0").rstrip(".")
    return f"${usd:,.2f}"


def format_cost(credits: float | None, credits_per_usd: float = CREDITS_PER_USD) -> str:
    """`5,040,000 credits ($2.52)`, or `n/a` when the cost is unknown.

    Example:
        ```python
        format_cost(result.credits_used, credentials.credits_per_usd)
        ```
    """
    usd = credits_to_usd(credits, credits_per_usd)
    if credits is None or usd is None:
        return "n/a"
    return f"{format_credits(credits)} credits ({format_usd(usd)})"


def format_reused_cost(
    earlier: float | None, credits_per_usd: float = CREDITS_PER_USD, *, now: float = 0.0
) -> str:
    """What a run that reused earlier generations cost: `now` credits spent in this run
    and `earlier` credits paid by a run before it.

    Example:
        ```python
        format_reused_cost(5_040_000)
        # '0 credits now ($0.00); paid earlier: 5,040,000 credits ($2.52)'
        ```
    """
    usd_now = credits_to_usd(now, credits_per_usd) or 0.0
    return (
        f"{format_credits(now)} credits now ({format_usd(usd_now)}); "
        f"paid earlier: {format_cost(earlier, credits_per_usd)}"
    )
