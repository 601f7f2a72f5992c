"""Conditional neural process for 1-D regression (Garnelo et al. 2018a).

    r = mean_i h([x_i, y_i])                  the context's representation (invariant to its order)
    p(y | x, C) = N(mu, sigma^2), (mu, sigma) = g([x, r])
    loss = -mean log p(y_T | x_T, C)           over the targets T (context and query points)

The set encoder h, the Gaussian output and the predict/adapt plumbing are shared with the latent
neural process (:mod:`metalab.algorithms.model.components.processes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Normal

from metalab.algorithms.model.components.processes import (
    ProcessOptions,
    RegressionProcess,
    gaussian,
    targets_of,
)
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions


@dataclass
class CNPOptions(ProcessOptions):
    """The CNP has the options of every neural process (:class:`ProcessOptions`) and no others."""


@register("cnp")
class CNP(RegressionProcess):
    options: CNPOptions

    def __init__(self, options: CNPOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.encoder = self.set_encoder(options.representation_size)
        self.decoder = self.gaussian_decoder(self.x_size + options.representation_size)

    def distribution(self, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Normal:
        """p(y | x, C) at target_x [T, N, Dx] given the context [T, K, D] -> Normal over [T, N, Dy]."""
        r = self.encoder(context_x, context_y).unsqueeze(1).expand(-1, target_x.shape[1], -1)
        return gaussian(self.decoder(torch.cat([target_x, r], dim=-1)))

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        target_x, target_y = targets_of(batch)
        prediction = self.distribution(batch.support_x, batch.support_y, target_x)
        loss = -prediction.log_prob(target_y).mean()
        loss.backward()
        query_mse = (prediction.mean[:, batch.support_x.shape[1]:] - batch.query_y).pow(2).mean()
        return {"loss": loss.detach(), "mse": query_mse.detach()}

    @torch.no_grad()
    def predictive(self, batch: Task) -> tuple[Tensor, Tensor]:
        prediction = self.distribution(batch.support_x, batch.support_y, batch.query_x)
        return prediction.mean, prediction.stddev

    @torch.no_grad()
    def log_likelihood(self, batch: Task) -> Tensor:
        predicted = self.distribution(batch.support_x, batch.support_y, batch.query_x)
        return predicted.log_prob(batch.query_y).flatten(1).mean(1)
