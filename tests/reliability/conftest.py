"""Size of the reliability suite: CI-sized by default, the long version with `pytest --long`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True when the suite was started with `--long` (or OMNIHUMAN_LONG_TESTS=1)."""
    return bool(request.config.getoption("--long"))
