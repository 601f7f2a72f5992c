"""PLATIPUS (Finn, Xu & Levine 2018, "Probabilistic Model-Agnostic Meta-Learning"): a learned Gaussian prior over
MAML's initialisation, conditioned on the support set by a gradient step, and samples of it adapted by MAML's
inner loop.

Meta-parameters Theta = {mu_theta, sigma_theta, v_q, gamma_p, gamma_q} (section 4; sigma_theta and sqrt(v_q) per
parameter entry as log standard deviations, the learned step sizes gamma one per adapted tensor). Meta-training,
Algorithm 1, for each task with support D^tr and query D^test (L: the task loss, MSE or cross-entropy):

    q(theta | D^tr, D^test) = N(mu_theta - gamma_q grad_mu [L(mu_theta, D^tr) + L(mu_theta, D^test)], v_q)
    p(theta | D^tr)         = N(mu_theta - gamma_p grad_mu L(mu_theta, D^tr), sigma_theta^2)
    theta ~ q;   phi = theta - alpha grad_theta L(theta, D^tr)                  (``inner_steps`` steps, rate alpha)
    min_Theta  (1/T) sum_tasks [ E_q L(phi, D^test) + kl_weight KL(q(theta | D^tr, D^test) || p(theta | D^tr)) ]

(the algorithm box writes q's step on D^test alone; section 4's inference network conditions on both sets, as
here). Meta-testing, Algorithm 2: theta ~ p(theta | D^tr), adapted by the inner loop; S samples give the
predictive mixture. The meta-gradient flows through the gradient steps (second order unless ``first_order``).

Regression's likelihood: Algorithm 1 scores the queries by the MSE, which says nothing of the observation noise
sigma_y, so the predictive mixture's components N(f_s(x), sigma_y^2) need a sigma_y from elsewhere (``noise_std``,
fixed). With ``learn_noise`` the query term is the variational objective's own, -log N(y; f_phi(x), sigma_y^2) per
point, and sigma_y is a meta-parameter learned with the others, so that the predictive intervals are those of the
residuals the model actually makes (the inner loop and the gamma steps keep the MSE, as in Algorithm 1).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.bayesian.base import (
    BayesianLearner,
    SampledOptions,
    gaussian_negative_log_likelihood,
    kl_diagonal_gaussians,
    repeat_samples,
    sample_gaussian,
)
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Params, expand_for_tasks, task_loss


@dataclass
class PLATIPUSOptions(SampledOptions):
    #: sigma_theta (the prior's) and sqrt(v_q) (the posterior's) standard deviations at initialisation.
    std_init: float = 0.01
    #: gamma_p and gamma_q, the learned step sizes of the prior's and the posterior's gradient step, at initialisation.
    gamma_init: float = 0.01
    #: the weight of KL(q(theta | D^tr, D^test) || p(theta | D^tr)) in the meta-objective.
    kl_weight: float = 1.0
    #: regression: learn sigma_y, the likelihood's standard deviation (a meta-parameter from ``noise_std``), and
    #: score the queries by its Gaussian negative log-likelihood per point instead of the MSE (see the module
    #: docstring); False: Algorithm 1's MSE, with the fixed ``noise_std`` for the predictive mixture only.
    learn_noise: bool = False


@register("platipus")
class PLATIPUS(BayesianLearner):
    """A learned prior N(mu_theta, sigma_theta^2), conditioned on the support set; see the module docstring."""

    options: PLATIPUSOptions

    def __init__(self, options: PLATIPUSOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        params = self.parameters_by_name()
        names = self.adapted_names()

        def per_tensor(value: float, like: bool) -> nn.ParameterList:
            return nn.ParameterList(nn.Parameter(torch.full_like(params[n], value) if like else torch.tensor(value))
                                    for n in names)

        #: log sigma_theta and log sqrt(v_q), per adapted parameter entry (order of ``adapted_names()``).
        self.prior_log_std = per_tensor(math.log(options.std_init), like=True)
        self.posterior_log_std = per_tensor(math.log(options.std_init), like=True)
        #: gamma_p and gamma_q, one learned step size per adapted tensor.
        self.prior_step = per_tensor(options.gamma_init, like=False)
        self.posterior_step = per_tensor(options.gamma_init, like=False)
        if options.learn_noise and options.kind != "regression":
            raise ValueError("learner.learn_noise applies to regression (sigma_y of a Gaussian likelihood); "
                             "set it to false for classification")
        #: log sigma_y, learned when ``learn_noise`` (else None: the fixed ``noise_std``).
        self.log_noise_std = nn.Parameter(torch.tensor(math.log(options.noise_std))) if options.learn_noise else None

    def noise_std(self) -> float | Tensor:
        return self.options.noise_std if self.log_noise_std is None else self.log_noise_std.exp()

    def query_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The query term of each sample: the task loss (MSE, cross-entropy), or with ``learn_noise`` the Gaussian
        negative log-likelihood per query point, -log N(y; f(x), sigma_y^2) averaged over the points and outputs:
        outputs [R, Q, ...], targets [R, Q(, D)] -> [R]."""
        if self.log_noise_std is None:
            return self.loss_fn(outputs, targets)
        return gaussian_negative_log_likelihood(outputs, targets, self.noise_std()) / targets[0].numel()

    def mean_gradients(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor, training: bool,
                       create_graph: bool) -> Params:
        """grad_mu L(mu_theta, D) of each task, by adapted name: [T, ...] (``params``: the adapted ones [T, ...])."""
        def forward(fast: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
            return self.network_forward(fast, inputs, training, inner=True, differentiated_twice=create_graph)

        names = self.adapted_names()
        grads = self.inner_loop(training).gradients(forward, params, x, y, names, task_loss(self.loss_fn), create_graph)
        return dict(zip(names, grads))

    def stepped(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], steps: nn.ParameterList) -> Params:
        """mu_theta - gamma grad, by adapted name [T, ...]."""
        return {n: params[n] - gamma * grads[n] for n, gamma in zip(self.adapted_names(), steps)}

    def objective(self, batch: Task) -> tuple[Tensor, Tensor]:
        """Algorithm 1's objective (a scalar) and the query outputs of its samples [T, S, Q, ...]."""
        samples, names = self.options.train_samples, self.adapted_names()
        create_graph = not self.options.first_order
        mu = expand_for_tasks(self.parameters_by_name(), names, len(batch))
        with torch.enable_grad():
            train = self.mean_gradients(mu, batch.support_x, batch.support_y, True, create_graph)
            test = self.mean_gradients(mu, batch.query_x, batch.query_y, True, create_graph)
        q_mean = self.stepped(mu, {n: train[n] + test[n] for n in names}, self.posterior_step)
        p_mean = self.stepped(mu, train, self.prior_step)
        q_log_std, p_log_std = dict(zip(names, self.posterior_log_std)), dict(zip(names, self.prior_log_std))
        theta = sample_gaussian(q_mean, q_log_std, samples)  # theta ~ q, [T * S, ...]
        phi = self.adapt_from({**mu, **theta}, repeat_samples(batch.support_x, samples),
                              repeat_samples(batch.support_y, samples), training=True)
        record = self.batch_norm_record()
        outputs = self.sampled_forward(phi, batch.query_x, samples, training=True, record=record)
        self.record_batch_norm(record, len(batch))
        query_loss = self.query_loss(outputs.flatten(0, 1), repeat_samples(batch.query_y, samples))
        kl = kl_diagonal_gaussians(q_mean, q_log_std, p_mean, p_log_std)
        return (query_loss.view(len(batch), samples).mean(1) + self.options.kl_weight * kl).mean(), outputs

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        self.check_batch(batch)
        loss, outputs = self.objective(batch)
        loss.backward()
        return self.sample_metrics(outputs, batch.query_y, loss)

    def sample_outputs(self, batch: Task) -> Tensor:
        """Algorithm 2: theta ~ p(theta | D^tr) = N(mu_theta - gamma_p grad L(mu_theta, D^tr), sigma_theta^2),
        adapted by the inner loop; the S samples' outputs on the queries [T, S, Q, ...]."""
        samples, names = self.options.samples, self.adapted_names()
        mu = expand_for_tasks(self.parameters_by_name(), names, len(batch))
        mu.update({n: mu[n].detach().requires_grad_() for n in names})  # no meta-graph (and under no_grad too)
        with torch.enable_grad():
            train = self.mean_gradients(mu, batch.support_x, batch.support_y, False, create_graph=False)
        with torch.no_grad():
            p_mean = self.stepped(mu, train, self.prior_step)
            theta = sample_gaussian(p_mean, dict(zip(names, self.prior_log_std)), samples)
        phi = self.adapt_from({**mu, **theta}, repeat_samples(batch.support_x, samples),
                              repeat_samples(batch.support_y, samples), training=False)
        with torch.no_grad():
            return self.sampled_forward(phi, batch.query_x, samples, training=False)
