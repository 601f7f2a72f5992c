"""LLAMA (Grant et al. 2018, "Recasting Gradient-Based Meta-Learning as Hierarchical Bayes"): MAML as empirical
Bayes in a hierarchical model, with a Laplace approximation of each task's posterior.

theta is the prior's mean, phi_t a task's parameters: p(phi_t | theta) = N(theta, tau^-1 I). The inner loop
(the paper's section 3: MAML's steps as MAP inference) finds a mode of the task's posterior from its support
set, by k gradient steps from theta on

    U_t(phi) = -(1/N) sum_n log p(y_n | x_n, phi) + (tau / 2N) ||phi - theta||^2          (tau = 0: MAML's loop)

(divided by the likelihood's scale, so that it is MAML's loss plus the prior's term: cross-entropy, or the MSE
for a Gaussian likelihood N(f, sigma^2)),

and the Laplace approximation (the paper's section 4) turns the marginal likelihood of the task into the mode's
likelihood times a volume term; the meta-objective (its ML-LAPLACE subroutine) is, per task,

    -(1/Q) sum_q log p(y_q | x_q, phi*_t) + eta (1 / 2Q) log det H_t,   H_t = K-FAC(support at phi*_t) + tau I,

with the paper's Kronecker-factored curvature (Martens & Grosse 2015) of the support set's negative
log-likelihood on the Linear and Conv2d layers (:mod:`metalab.nn.laplace`; BatchNorm's scale and shift have no
Laplace term), differentiated through the inner loop (second order) and through the curvature. The paper's
log-determinant weight eta is not given; the curvature here is the support set's (the data the posterior
conditions on), and the meta-batch runs as one slice (no ``speed.task_chunk`` slicing). The posterior
q(phi_t) = N(phi*_t, H_t^-1) gives the predictive: the average of the likelihood over ``predictive_samples`` draws
of the curvature layers' weights (softmax probabilities; for regression a mixture of Gaussians N(f, sigma^2)).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from metalab.algorithms.gradient.base import GradientLearner, GradientOptions
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.batch_norm import statistics_for
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Objective
from metalab.nn.laplace import (
    KroneckerFactors,
    OutputCurvature,
    curvature_layers,
    gaussian_curvature,
    kronecker_factors,
    softmax_curvature,
    weight_matrix,
    with_weight_matrix,
)

LAPLACE_LAYERS = ("all", "head")
#: seed of the posterior draws of the predictive, so that evaluation is deterministic
PREDICTIVE_SEED = 0


@dataclass
class LLAMAOptions(GradientOptions):
    #: tau, the precision of the prior N(theta, tau^-1 I) over a task's parameters: the proximal term of the inner
    #: objective and the Laplace curvature's damping (> 0, which keeps the curvature invertible).
    prior_precision: float = 1.0
    #: eta, the weight of the log-determinant term of the meta-objective (0: MAML's objective; 1: the Laplace
    #: approximation's own weight, which on Omniglot 1-shot drove the curvature, and the predictions' confidence,
    #: toward zero: benchmarks/bayesian/RESULTS.md).
    logdet_weight: float = 0.01
    #: the layers with a Laplace posterior: "all" Linear and Conv2d layers, or the "head" only.
    laplace_layers: str = "all"
    #: posterior draws averaged by the predictive distribution (evaluation and prediction).
    predictive_samples: int = 10
    #: sigma, the noise standard deviation of the Gaussian likelihood N(y; f(x), sigma^2) (regression).
    noise_std: float = 0.1


@register("llama")
class LLAMA(GradientLearner):
    """MAML with a Kronecker-factored Laplace posterior per task (see the module docstring)."""

    options: LLAMAOptions

    def __init__(self, options: LLAMAOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if not (math.isfinite(options.prior_precision) and options.prior_precision > 0):
            raise ValueError(f"learner.prior_precision must be a finite precision > 0 (tau keeps the Laplace "
                             f"curvature invertible), got {options.prior_precision}")
        if not options.logdet_weight >= 0:
            raise ValueError(f"learner.logdet_weight must be >= 0 (0: MAML's objective), got {options.logdet_weight}")
        if options.laplace_layers not in LAPLACE_LAYERS:
            raise ValueError(f"learner.laplace_layers must be one of {', '.join(LAPLACE_LAYERS)}, "
                             f"got {options.laplace_layers!r}")
        if options.predictive_samples < 1:
            raise ValueError(f"learner.predictive_samples must be >= 1, got {options.predictive_samples}")
        if not options.noise_std > 0:
            raise ValueError(f"learner.noise_std must be > 0, got {options.noise_std}")
        if self.speed.checkpoint_inner_loop and self.speed.engine == "accel":
            # the checkpointed unroll's meta-gradient differs from the reference's when the adapted parameters
            # also feed the curvature's double backward (tests/accel/test_backend_equals_reference.py)
            raise ValueError("LLAMA differentiates its adapted parameters through the curvature as well as the query "
                             "loss, which speed.checkpoint_inner_loop does not support: set "
                             "speed.checkpoint_inner_loop=false")

    # ----------------------------------------------------------------------------- the model
    def laplace_layer_names(self) -> list[str]:
        layers = curvature_layers(self.network)
        return layers[-1:] if self.options.laplace_layers == "head" else layers

    def output_curvature(self) -> OutputCurvature:
        """L with L L^T the likelihood's Hessian in the outputs: softmax, or Gaussian with noise sigma."""
        return softmax_curvature if self.task_kind == "classification" else gaussian_curvature(self.options.noise_std)

    def likelihood_scale(self, targets: Tensor) -> float:
        """c with -(1/N) sum_n log p(y_n | f_n) = c * loss + const: 1 (cross-entropy), D / (2 sigma^2) (MSE)."""
        return 1.0 if self.task_kind == "classification" else targets.shape[-1] / (2 * self.options.noise_std**2)

    def negative_log_likelihood(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """-(1/N) sum_n log p(y_n | f_n) per task [T], up to a constant."""
        return self.loss_fn(outputs, targets) * self.likelihood_scale(targets)

    def support_objective(self) -> Objective:
        tau, adapted, theta = self.options.prior_precision, self.adapted_names(), self.parameters_by_name()

        def objective(params: Mapping[str, Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
            """U_t(phi) / c [T]: MAML's loss plus the prior's (tau / 2Nc) ||phi - theta||^2 (the same mode as U_t's,
            and inner_lr keeps its meaning in MAML's loss units)."""
            distance = sum((params[n] - theta[n]).pow(2).flatten(1).sum(1) for n in adapted)
            weight = 0.5 * tau / (targets.shape[1] * self.likelihood_scale(targets))
            return self.loss_fn(outputs, targets) + weight * distance

        return objective

    def curvature(self, phi: Mapping[str, Tensor], support_x: Tensor, training: bool,
                  create_graph: bool) -> list[dict[str, KroneckerFactors]]:
        """Each task's K-FAC factors of its support set's negative log-likelihood at phi* (one dict per task)."""
        statistics = statistics_for(self.options.bn_mode, training)
        layers, curvature = self.laplace_layer_names(), self.output_curvature()
        adapted = set(self.adapted_names())
        return [kronecker_factors(self.network, {n: (v[t] if n in adapted else v) for n, v in phi.items()},
                                  support_x[t], curvature, layers, statistics, create_graph)
                for t in range(support_x.shape[0])]

    def log_det(self, factors: list[dict[str, KroneckerFactors]]) -> Tensor:
        """log det H_t [T], H_t the block-diagonal K-FAC curvature plus tau I."""
        tau = self.options.prior_precision
        return torch.stack([sum(f.log_det(tau) for f in task.values()) for task in factors])  # type: ignore[misc]

    # ------------------------------------------------------------------------- meta-training
    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """grad_theta of the mean over tasks of the ML-LAPLACE objective (module docstring), into ``.grad``."""
        self.check_batch(batch)
        phi = self.adapt_tasks(batch.support_x, batch.support_y, training=True)
        outputs = self.query_outputs(phi, batch.query_x, training=True)
        query = self.negative_log_likelihood(outputs, batch.query_y)  # [T]
        log_det = self.log_det(self.curvature(phi, batch.support_x, training=True,
                                              create_graph=not self.options.first_order))
        eta, queries = self.options.logdet_weight, batch.query_y.shape[1]
        (query + eta * 0.5 * log_det / queries).mean().backward()
        metrics = self.metrics(outputs, batch.query_y)
        return {**metrics, "log_det": log_det.detach().mean()}

    # ------------------------------------------------------------------------------ predictive
    def posterior_samples(self, batch: Task, count: int) -> Tensor:
        """Outputs [S, T, Q, ...] of ``count`` draws of each task's Laplace posterior N(phi*, H^-1) on its queries."""
        with torch.enable_grad():
            phi = {n: v.detach() for n, v in self.adapt_tasks(batch.support_x, batch.support_y, training=False).items()}
        factors = self.curvature(phi, batch.support_x, training=False, create_graph=False)
        generator = torch.Generator(device=batch.support_x.device).manual_seed(PREDICTIVE_SEED)
        modules, tau = dict(self.network.named_modules()), self.options.prior_precision
        draws = {name: torch.stack([task[name].sample(tau, count, generator) for task in factors], 1)  # [S, T, ...]
                 for name in self.laplace_layer_names()}
        full = {n: (v if n in phi else v.unsqueeze(0).expand(len(batch), *v.shape)) for n, v in
                {**self.parameters_by_name(), **phi}.items()}
        names = list(full)
        outputs = []
        with torch.no_grad():
            for s in range(count):
                sample = dict(full)
                for name, delta in draws.items():
                    layer = modules[name]
                    sample = with_weight_matrix(sample, name, layer, weight_matrix(sample, name, layer) + delta[s])
                outputs.append(self.execution.forward(self.network, sample, batch.query_x, names,
                                                      statistics=statistics_for(self.options.bn_mode, False)))
        return torch.stack(outputs)

    def predictive_distribution(self, batch: Task) -> Distribution:
        """The Laplace posterior's predictive, by ``predictive_samples`` draws: the mean of their softmax
        (classification), or the equal mixture of N(f_s(x), sigma^2) (regression); batch [T, Q]."""
        self.check_batch(batch)
        outputs = self.posterior_samples(batch, self.options.predictive_samples)
        if self.task_kind == "classification":
            ways = int(batch.support_y.max()) + 1
            return Categorical(probs=outputs[..., :ways].double().softmax(-1).mean(0), validate_args=False)
        means = outputs.movedim(0, 2)  # [T, Q, S, D]
        components = Independent(Normal(means, torch.full_like(means, self.options.noise_std)), 1)
        return MixtureSameFamily(Categorical(logits=means.new_zeros(means.shape[:3])), components)
