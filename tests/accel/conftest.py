"""The speed backend is checked in float64: exact agreement, not float32 rounding, is what these tests show."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _float64(float64_default):
    yield
