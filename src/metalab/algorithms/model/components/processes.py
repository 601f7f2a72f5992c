"""What the conditional and the latent neural process share: their options, the Gaussian output of
their decoders, the permutation-invariant set encoder, the training targets and the regression
plumbing (``predict`` and ``adapt`` from a predictive distribution).

Context = the task's support points, targets = support and query points together (the paper's
training setup: the context is a subset of the targets). The decoder gives a Gaussian per target
point: mean and std = 0.1 + 0.9 softplus(.) (the floor keeps the likelihood bounded).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from metalab.algorithms.base import LearnerOptions, MetaLearner
from metalab.data.task import Task
from metalab.nn.backbones import MLP
from metalab.nn.execution import SpeedOptions


@dataclass
class ProcessOptions(LearnerOptions):
    """Options of every neural process: sizes of the representation and of the encoder/decoder MLPs."""

    representation_size: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 2
    hidden: int = 128


def gaussian(parameters: Tensor, floor: float = 0.1) -> Normal:
    """Split [..., 2D] into mean and std = floor + (1 - floor) softplus(raw) -> Normal over [..., D]."""
    mean, raw = parameters.chunk(2, dim=-1)
    return Normal(mean, floor + (1 - floor) * F.softplus(raw))


class SetEncoder(nn.Module):
    """Permutation-invariant: x [T, N, Dx], y [T, N, Dy] -> mean_i MLP([x_i, y_i]) [T, R]."""

    def __init__(self, inputs: int, hidden: int, layers: int, out: int) -> None:
        super().__init__()
        self.net = MLP(inputs, [hidden] * (layers - 1), out)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([x, y], dim=-1)).mean(1)


def targets_of(batch: Task) -> tuple[Tensor, Tensor]:
    """The training targets: support and query points together, x and y [T, K + Q, D]."""
    return torch.cat([batch.support_x, batch.query_x], 1), torch.cat([batch.support_y, batch.query_y], 1)


class RegressionProcess(MetaLearner):
    """Base class of the neural processes: vector inputs, one output, predict/adapt from ``predictive``.

    ``predict`` returns predictive means [T, Q, 1] (scored by MSE by the evaluator);
    ``predictive(batch)`` the means and standard deviations; ``log_likelihood(batch)`` the mean
    per-point predictive log-likelihood of every task's query points.
    """

    task_kind = "regression"
    options: ProcessOptions

    def __init__(self, options: ProcessOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if len(input_shape) != 1:
            raise ValueError(f"neural processes take vector inputs (e.g. data.dataset: sinusoid or gp); "
                             f"got inputs of shape {input_shape}")
        self.x_size, self.y_size = input_shape[0], 1

    def set_encoder(self, out: int) -> SetEncoder:
        """An encoder h of the (x, y) pairs of a set into [T, out], with ``encoder_layers`` layers of ``hidden``."""
        options = self.options
        return SetEncoder(self.x_size + self.y_size, options.hidden, options.encoder_layers, out)

    def gaussian_decoder(self, inputs: int) -> MLP:
        """A decoder g from ``inputs`` features of a target point to the parameters of its Gaussian over y
        (see :func:`gaussian`), with ``decoder_layers`` hidden layers of ``hidden``."""
        options = self.options
        return MLP(inputs, [options.hidden] * options.decoder_layers, 2 * self.y_size)

    def predictive(self, batch: Task) -> tuple[Tensor, Tensor]:
        """Predictive mean and standard deviation at the query points: [T, Q, 1] each."""
        raise NotImplementedError

    def log_likelihood(self, batch: Task) -> Tensor:
        """Mean per-point predictive log-likelihood of each task's query targets: [T]."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Task) -> Tensor:
        return self.predictive(batch)[0]

    @torch.no_grad()
    def predictive_distribution(self, batch: Task) -> Distribution:
        """A Gaussian per query point with :meth:`predictive`'s mean and std: batch [T, Q], event [1]."""
        return Independent(Normal(*self.predictive(batch)), 1)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        def regress(query_x: Tensor) -> Tensor:
            query_y = query_x.new_zeros(query_x.shape[0], support_y.shape[-1])
            task = Task(support_x, support_y, query_x, query_y)
            return self.predict(Task.stack([task]))[0]

        return regress
