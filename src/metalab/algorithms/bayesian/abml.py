"""ABML (Ravi & Beatson 2019, "Amortized Bayesian Meta-Learning"): a meta-learned Gaussian prior over the
network's weights, from which a few steps of Bayes by Backprop give each task its Gaussian posterior.

The prior p(phi | theta) = N(mu_theta, sigma_theta^2) (diagonal; mu_theta is the network's initialisation,
log sigma_theta a meta-parameter). A task's posterior q(phi; lambda), lambda = (m, log s), starts at the prior,
lambda_0 = theta, and takes K gradient steps (rate ``inner_lr``) on the negative ELBO of its support set (section 3):

    L_S(lambda) = E_{q(phi; lambda)} [-log p(D^S | phi)] + beta KL(q(phi; lambda) || p(phi | theta)),

the expectation estimated with S reparameterised samples per step (Kingma & Welling 2014). The meta-objective is
the same bound on the query set at lambda_K(theta), with the hyper-prior on theta (a Normal on mu_theta, a Gamma on
the precision tau = sigma_theta^-2) counted once per meta-batch:

    L(theta) = (1/T) sum_t [ E_{q(phi; lambda_Kt)}[-log p(D^Q_t | phi)] + beta KL(q(phi; lambda_Kt) || p(phi | theta)) ]
               - (beta / T) log p(theta),

back-propagated through the K steps. beta (``kl_weight``) is the paper's down-weighting of the KL terms (1: the
plain ELBO). At test time the posterior q(phi; lambda_K) of the support set is sampled S times and the predictive
distribution is the mixture of the S sampled networks.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, distributions, nn

from metalab.algorithms.bayesian.base import (
    BayesianLearner,
    SampledOptions,
    kl_diagonal_gaussians,
    repeat_samples,
    sample_gaussian,
)
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import SGD, InnerLoop, Objective, Params, TaskForward

MEAN, LOG_STD = "mean:", "log_std:"  # the prefixes of lambda's two halves in the inner loop's parameters


@dataclass
class ABMLOptions(SampledOptions):
    #: beta, the weight of the KL terms (and of the hyper-prior) in both bounds; 1 = the plain ELBO.
    kl_weight: float = 1.0
    #: sigma_theta at initialisation, the prior's standard deviation (its log is meta-learned).
    prior_std_init: float = 0.1
    #: whether the meta-objective has the hyper-prior -log p(theta) (Normal on mu_theta, Gamma on tau).
    hyper_prior: bool = True
    #: the hyper-prior's standard deviation of mu_theta: N(mu_theta; 0, hyper_mean_std^2).
    hyper_mean_std: float = 1.0
    #: the Gamma(a0, b0) hyper-prior on the precision tau = sigma_theta^-2: [shape a0, rate b0].
    hyper_precision: list[float] = field(default_factory=lambda: [1.0, 0.01])


@register("abml")
class ABML(BayesianLearner):
    """Meta-learned prior N(mu_theta, sigma_theta^2), K ELBO steps per task; see the module docstring."""

    options: ABMLOptions

    def __init__(self, options: ABMLOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        shape, rate = (float(value) for value in (list(options.hyper_precision) + [0.0, 0.0])[:2])
        if not (len(options.hyper_precision) == 2 and shape > 0 and rate > 0 and options.hyper_mean_std > 0):
            raise ValueError(f"learner.hyper_precision must be [a0 > 0, b0 > 0] and learner.hyper_mean_std > 0, got "
                             f"{list(options.hyper_precision)} and {options.hyper_mean_std}")
        params = self.parameters_by_name()
        #: log sigma_theta, one tensor per adapted parameter (order of ``adapted_names()``).
        self.prior_log_std = nn.ParameterList(
            nn.Parameter(torch.full_like(params[name], math.log(options.prior_std_init)))
            for name in self.adapted_names())

    def prior(self) -> tuple[Params, Params]:
        """theta: the prior's mean and log standard deviation by adapted name (shared by the tasks)."""
        means = self.parameters_by_name()
        names = self.adapted_names()
        return {n: means[n] for n in names}, dict(zip(names, self.prior_log_std))

    def negative_elbo(self, samples: int) -> Objective:
        """The inner loop's objective: each task's -ELBO [T] at lambda (see the module docstring)."""
        prior_mean, prior_log_std = self.prior()
        beta = self.options.kl_weight

        def objective(lam: Mapping[str, Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
            mean, log_std = split(lam)
            nll = self.negative_log_likelihood(outputs.flatten(0, 1), repeat_samples(targets, samples))
            kl = kl_diagonal_gaussians(mean, log_std, prior_mean, prior_log_std)
            return nll.view(-1, samples).mean(1) + beta * kl

        return objective

    def sample_forward(self, samples: int, training: bool, inner: bool = False,
                       record: Record | None = None) -> TaskForward:
        """(lambda [T, ...], x [T, N, ...]) -> outputs [T, S, N, ...] of S networks drawn from q(phi; lambda)."""
        def forward(lam: Mapping[str, Tensor], x: Tensor) -> Tensor:
            mean, log_std = split(lam)
            drawn = sample_gaussian(mean, log_std, samples)
            return self.sampled_forward({**self.parameters_by_name(), **drawn}, x, samples, training, record=record,
                                        inner=inner)
        return forward

    def posterior(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        """lambda_K of each task: K steps of SGD on the support set's -ELBO from lambda_0 = theta."""
        samples = self.options.train_samples if training else self.options.samples
        mean, log_std = self.prior()
        start = {**{MEAN + n: v for n, v in mean.items()}, **{LOG_STD + n: v for n, v in log_std.items()}}
        create_graph = training and not self.options.first_order
        loop = InnerLoop(self.inner_steps(training), SGD(self.options.inner_lr), grad_clip=self.options.inner_grad_clip)
        with torch.enable_grad():
            return loop.adapt(self.sample_forward(samples, training, inner=True), start, list(start), support_x,
                              support_y, self.negative_elbo(samples), create_graph=create_graph)

    def hyper_prior_log_density(self) -> Tensor:
        """log p(theta) = sum log N(mu_theta; 0, hyper_mean_std^2) + log Gamma(sigma_theta^-2; a0, b0)."""
        mean, log_std = self.prior()
        like = self.prior_log_std[0]
        constant = lambda value: torch.tensor(float(value), dtype=like.dtype, device=like.device)  # noqa: E731
        shape, rate = self.options.hyper_precision
        normal = distributions.Normal(constant(0.0), constant(self.options.hyper_mean_std))
        gamma = distributions.Gamma(constant(shape), constant(rate))
        return sum((normal.log_prob(mean[n]).sum() + gamma.log_prob((-2 * log_std[n]).exp()).sum() for n in mean),
                   torch.zeros((), dtype=like.dtype, device=like.device))

    def objective(self, batch: Task) -> tuple[Tensor, Tensor]:
        """The meta-objective L(theta) (a scalar) and the query outputs of its samples [T, S, Q, ...]."""
        samples, beta = self.options.train_samples, self.options.kl_weight
        lam = self.posterior(batch.support_x, batch.support_y, training=True)
        record = self.batch_norm_record()
        outputs = self.sample_forward(samples, training=True, record=record)(lam, batch.query_x)
        self.record_batch_norm(record, len(batch))
        nll = self.negative_log_likelihood(outputs.flatten(0, 1), repeat_samples(batch.query_y, samples))
        mean, log_std = split(lam)
        kl = kl_diagonal_gaussians(mean, log_std, *self.prior())
        loss = (nll.view(len(batch), samples).mean(1) + beta * kl).mean()
        if self.options.hyper_prior:
            loss = loss - beta * self.hyper_prior_log_density() / len(batch)
        return loss, outputs

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        self.check_batch(batch)
        loss, outputs = self.objective(batch)
        loss.backward()
        return self.sample_metrics(outputs, batch.query_y, loss)

    def sample_outputs(self, batch: Task) -> Tensor:
        lam = {n: v.detach() for n, v in self.posterior(batch.support_x, batch.support_y, training=False).items()}
        with torch.no_grad():
            return self.sample_forward(self.options.samples, training=False)(lam, batch.query_x)


def split(lam: Mapping[str, Tensor]) -> tuple[Params, Params]:
    """lambda's mean and log standard deviation by adapted name, from the inner loop's prefixed names."""
    return ({n[len(MEAN):]: v for n, v in lam.items() if n.startswith(MEAN)},
            {n[len(LOG_STD):]: v for n, v in lam.items() if n.startswith(LOG_STD)})
