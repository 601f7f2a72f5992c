"""Neural processes for 1-D regression: the conditional NP (Garnelo et al. 2018a) and the
latent-variable NP (Garnelo et al. 2018b).

Context = the task's support points, targets = support and query points together (the paper's
training setup: the context is a subset of the targets). The decoder gives a Gaussian per target
point: mean and std = 0.1 + 0.9 softplus(.) (the floor keeps the likelihood bounded).

    CNP: r = mean_i h([x_i, y_i]);  p(y | x, C) = N(mu, sigma^2), (mu, sigma) = g([x, r])
         loss = -mean log p(y_T | x_T, C)
    NP:  s = mean_i h_z([x_i, y_i]);  q(z | C) = N(mu_z(s), sigma_z(s)^2)
         (+ the deterministic path r of the CNP when learner.deterministic_path)
         loss = -E_{q(z|C,T)} mean log p(y_T | x_T, z) + KL(q(z | C, T) || q(z | C)) / |T|

``predict`` returns predictive means [T, Q, 1] (scored by MSE by the evaluator);
``predictive(batch)`` the means and standard deviations; ``log_likelihood(batch)`` the mean
per-point predictive log-likelihood of every task's query points.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from metalab.algorithms.base import LearnerOptions, MetaLearner
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.data.task import Task
from metalab.nn.backbones import MLP

#: seed of the latent samples drawn in evaluation, so that predictions are deterministic
EVAL_SAMPLE_SEED = 0


def gaussian(parameters: Tensor, floor: float = 0.1) -> Normal:
    """Split [..., 2D] into mean and std = floor + (1 - floor) softplus(raw) -> Normal over [..., D]."""
    mean, raw = parameters.chunk(2, dim=-1)
    return Normal(mean, floor + (1 - floor) * F.softplus(raw))


@dataclass
class CNPOptions(LearnerOptions):
    representation_size: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 2
    hidden: int = 128


@dataclass
class NPOptions(CNPOptions):
    latent_size: int = 128
    #: also condition the decoder on the CNP's deterministic representation
    deterministic_path: bool = False
    #: latent samples for training (Monte-Carlo ELBO) and for prediction
    train_samples: int = 1
    eval_samples: int = 32


class SetEncoder(nn.Module):
    """Permutation-invariant: x [T, N, Dx], y [T, N, Dy] -> mean_i MLP([x_i, y_i]) [T, R]."""

    def __init__(self, inputs: int, hidden: int, layers: int, out: int) -> None:
        super().__init__()
        self.net = MLP(inputs, [hidden] * (layers - 1), out)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([x, y], dim=-1)).mean(1)


class _RegressionProcess(MetaLearner):
    """What both processes share: the target set, the 1-D shapes, predict/adapt from ``predictive``."""

    task_kind = "regression"

    def __init__(self, options: CNPOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if len(input_shape) != 1:
            raise ValueError(f"neural processes take vector inputs (e.g. data.dataset: sinusoid or gp); got inputs of shape {input_shape}")
        self.x_size, self.y_size = input_shape[0], 1

    def predictive(self, batch: Task) -> tuple[Tensor, Tensor]:
        """Predictive mean and standard deviation at the query points: [T, Q, 1] each."""
        raise NotImplementedError

    def log_likelihood(self, batch: Task) -> Tensor:
        """Mean per-point predictive log-likelihood of each task's query targets: [T]."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Task) -> Tensor:
        return self.predictive(batch)[0]

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        def regress(query_x: Tensor) -> Tensor:
            query_y = query_x.new_zeros(query_x.shape[0], support_y.shape[-1])
            task = Task(support_x, support_y, query_x, query_y)
            return self.predict(Task.stack([task]))[0]

        return regress


def targets_of(batch: Task) -> tuple[Tensor, Tensor]:
    """The training targets: support and query points together, x and y [T, K + Q, D]."""
    return torch.cat([batch.support_x, batch.query_x], 1), torch.cat([batch.support_y, batch.query_y], 1)


@register("cnp")
class CNP(_RegressionProcess):
    Options = CNPOptions

    def __init__(self, options: CNPOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        o = options
        self.encoder = SetEncoder(self.x_size + self.y_size, o.hidden, o.encoder_layers, o.representation_size)
        self.decoder = MLP(self.x_size + o.representation_size, [o.hidden] * o.decoder_layers, 2 * self.y_size)

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
        return self.distribution(batch.support_x, batch.support_y, batch.query_x).log_prob(batch.query_y).flatten(1).mean(1)


@register("np")
class NeuralProcess(_RegressionProcess):
    Options = NPOptions

    def __init__(self, options: NPOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        o = options
        pair = self.x_size + self.y_size
        self.latent_encoder = SetEncoder(pair, o.hidden, o.encoder_layers, o.hidden)
        self.latent = nn.Linear(o.hidden, 2 * o.latent_size)
        self.deterministic_encoder = (
            SetEncoder(pair, o.hidden, o.encoder_layers, o.representation_size) if o.deterministic_path else None
        )
        decoder_in = self.x_size + o.latent_size + (o.representation_size if o.deterministic_path else 0)
        self.decoder = MLP(decoder_in, [o.hidden] * o.decoder_layers, 2 * self.y_size)

    def prior(self, x: Tensor, y: Tensor) -> Normal:
        """q(z | points): x, y [T, N, D] -> Normal over [T, latent_size] (std floored at 0.1 as in the paper's code)."""
        return gaussian(self.latent(F.relu(self.latent_encoder(x, y))))

    def decode(self, z: Tensor, context_x: Tensor, context_y: Tensor, target_x: Tensor) -> Normal:
        """p(y | x, z[, r]): z [M, T, L] (M samples), target_x [T, N, Dx] -> Normal over [M, T, N, Dy]."""
        samples, tasks, points = z.shape[0], target_x.shape[0], target_x.shape[1]
        parts = [target_x.expand(samples, -1, -1, -1), z.unsqueeze(2).expand(-1, -1, points, -1)]
        if self.deterministic_encoder is not None:
            r = self.deterministic_encoder(context_x, context_y)
            parts.append(r[None, :, None].expand(samples, tasks, points, -1))
        return gaussian(self.decoder(torch.cat(parts, dim=-1)))

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        target_x, target_y = targets_of(batch)
        posterior = self.prior(target_x, target_y)
        context_prior = self.prior(batch.support_x, batch.support_y)
        z = posterior.rsample((self.options.train_samples,))
        prediction = self.decode(z, batch.support_x, batch.support_y, target_x)
        log_likelihood = prediction.log_prob(target_y).mean()
        kl = kl_divergence(posterior, context_prior).sum(-1).mean() / target_x.shape[1]
        loss = -log_likelihood + kl
        loss.backward()
        query_mse = (prediction.mean.mean(0)[:, batch.support_x.shape[1]:] - batch.query_y).pow(2).mean()
        return {"loss": loss.detach(), "kl": kl.detach(), "mse": query_mse.detach()}

    def _samples(self, batch: Task) -> Normal:
        """The decoder's Gaussians at the queries for eval_samples draws of z ~ q(z | C): [M, T, Q, 1]."""
        prior = self.prior(batch.support_x, batch.support_y)
        generator = torch.Generator(device=batch.support_x.device).manual_seed(EVAL_SAMPLE_SEED)
        # one set of standard-normal draws shared by all tasks: a task's prediction does not depend on its batch
        noise = torch.randn((self.options.eval_samples, 1, prior.mean.shape[-1]), generator=generator,
                            device=prior.mean.device, dtype=prior.mean.dtype)
        return self.decode(prior.mean + prior.stddev * noise, batch.support_x, batch.support_y, batch.query_x)

    @torch.no_grad()
    def predictive(self, batch: Task) -> tuple[Tensor, Tensor]:
        """Mean and std of the mixture over z: law of total variance."""
        samples = self._samples(batch)
        mean = samples.mean.mean(0)
        variance = (samples.variance + samples.mean.pow(2)).mean(0) - mean.pow(2)
        return mean, variance.clamp_min(0).sqrt()

    @torch.no_grad()
    def log_likelihood(self, batch: Task) -> Tensor:
        """log (1/M) sum_m prod_n p(y_n | x_n, z_m), per point: the joint predictive of the query set."""
        joint = self._samples(batch).log_prob(batch.query_y).flatten(2).sum(-1)  # [M, T]
        samples, points = joint.shape[0], batch.query_y[0].numel()
        return (torch.logsumexp(joint, dim=0) - math.log(samples)) / points
