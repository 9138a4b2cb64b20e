"""Shared fixtures: tiny known-answer data, a seeded RNG, and the real datasets beside us."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from userlens.data.interactions import Interactions

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def two_groups() -> Interactions:
    """Checkerboard-like log: users 0-9 like items 0-4, users 10-19 like items 5-9.

    Each user has seen all but one item of their group, so the right recommendation is
    obvious: the missing item of their own group.
    """
    from tests.models.contract import two_groups_events

    return two_groups_events()


def missing_item(user: int) -> int:
    group = range(0, 5) if user < 10 else range(5, 10)
    return list(group)[user % 5]
