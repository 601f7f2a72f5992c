"""Learner tests run torch on one intra-op thread: on a shared, busy CPU two contending
threads are many times slower than one, and these tests only use tiny tensors."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
