"""The functional core is checked in float64: exact agreement, not float32 rounding, is what these tests show."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
