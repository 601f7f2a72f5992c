"""The log/sign preprocessing of gradients (and losses) that learned optimizers read (Andrychowicz et al. 2016,
appendix A; Ravi & Larochelle 2017, section 3.3 use it too).

A coordinate x becomes two inputs of comparable scale whatever the magnitude of x:

    x -> ( log(|x|) / p , sign(x) )     if |x| >= e^-p
    x -> ( -1 ,          e^p * x )      otherwise

so a tiny, a huge and a zero gradient all reach the network as O(1) numbers (p = 10 in both papers).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def log_sign_preprocess(x: Tensor, p: float = 10.0) -> Tensor:
    """x [...] -> [..., 2]: (log|x| / p, sign x) where |x| >= e^-p, else (-1, e^p x).

    The result is a constant of the graph only if ``x`` is; both branches are finite, so a backward through
    it (second-order unrolls) is finite too.
    """
    if not p > 0:
        raise ValueError(f"the preprocessing's p must be > 0 (the papers use 10), got {p}")
    threshold = math.exp(-p)
    magnitude = x.abs()
    large = magnitude >= threshold
    scale = torch.where(large, magnitude.clamp_min(threshold).log() / p, torch.full_like(x, -1.0))
    sign = torch.where(large, torch.sign(x), x * math.exp(p))
    return torch.stack([scale, sign], dim=-1)
