"""Latent-variable neural process for 1-D regression (Garnelo et al. 2018b).

    s = mean_i h_z([x_i, y_i]);  q(z | C) = N(mu_z(s), sigma_z(s)^2)
    (+ the deterministic path r of the CNP when learner.deterministic_path)
    p(y | x, z[, r]) = N(mu, sigma^2), (mu, sigma) = g([x, z[, r]])
    loss = -E_{q(z|C,T)} mean log p(y_T | x_T, z) + KL(q(z | C, T) || q(z | C)) / |T|

Predictions average ``eval_samples`` draws of z (fixed by a seed, so they are deterministic). The set
encoders, the Gaussian output and the predict/adapt plumbing are shared with the conditional neural
process (:mod:`metalab.algorithms.model.components.processes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, kl_divergence

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
class NPOptions(ProcessOptions):
    latent_size: int = 128
    #: also condition the decoder on the CNP's deterministic representation
    deterministic_path: bool = False
    #: latent samples for training (Monte-Carlo ELBO) and for prediction
    train_samples: int = 1
    eval_samples: int = 32


#: seed of the ``eval_samples`` latent draws of evaluation, so that predictions are deterministic
EVAL_SAMPLE_SEED = 0


@register("np")
class NeuralProcess(RegressionProcess):
    options: NPOptions

    def __init__(self, options: NPOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        o = options
        self.latent_encoder = self.set_encoder(o.hidden)
        self.latent = nn.Linear(o.hidden, 2 * o.latent_size)
        self.deterministic_encoder = self.set_encoder(o.representation_size) if o.deterministic_path else None
        self.decoder = self.gaussian_decoder(
            self.x_size + o.latent_size + (o.representation_size if o.deterministic_path else 0))

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
    def predictive_distribution(self, batch: Task) -> Distribution:
        """The predictive at each query point: the equal-weight mixture of the decoder's Gaussians over the
        ``eval_samples`` draws of z (batch [T, Q], event [1]; its mean and std are :meth:`predictive`'s)."""
        samples = self._samples(batch)  # [M, T, Q, 1]
        components = Independent(Normal(samples.mean.movedim(0, 2), samples.stddev.movedim(0, 2)), 1)  # [T, Q, M]
        weights = Categorical(logits=samples.mean.new_zeros(components.batch_shape))
        return MixtureSameFamily(weights, components)

    @torch.no_grad()
    def log_likelihood(self, batch: Task) -> Tensor:
        """log (1/M) sum_m prod_n p(y_n | x_n, z_m), per point: the joint predictive of the query set."""
        joint = self._samples(batch).log_prob(batch.query_y).flatten(2).sum(-1)  # [M, T]
        samples, points = joint.shape[0], batch.query_y[0].numel()
        return (torch.logsumexp(joint, dim=0) - math.log(samples)) / points
