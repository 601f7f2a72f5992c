"""What the gradient-based Bayesian learners share: Gaussians over the network's parameters, sampled networks for
T tasks and S samples at once, the likelihood, and the predictive distribution built from the samples.

A Bayesian learner of this family keeps a distribution over the adapted parameters of an ordinary network (the
gradient family's :func:`~metalab.algorithms.gradient.base.build_network`), draws S parameter samples per task
(or keeps S particles), adapts each with the inner loop of :mod:`metalab.nn.inner_loop`, and predicts with the
mixture of the S adapted networks. Samples are folded into the task dimension: task t's sample s is row
``t * S + s`` of every adapted tensor [T * S, ...], so that one :class:`~metalab.nn.execution.Execution` forward
runs all of them, on the reference path or the speed backend alike.

The distributions are diagonal Gaussians, held as a mean and a log standard deviation per adapted tensor
(:class:`Params` dicts); :func:`sample_gaussian` draws with the reparameterisation trick (Kingma & Welling 2014),
:func:`kl_diagonal_gaussians` is the closed-form KL divergence between two of them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, distributions

from metalab.algorithms.base import check_support_labels, classification_metrics
from metalab.algorithms.gradient.base import GradientLearner, GradientOptions
from metalab.data.task import Task
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Objective, Params, UpdateRule


@dataclass
class BayesianOptions(GradientOptions):
    #: regression: sigma_y, the standard deviation of the Gaussian likelihood N(y; f(x), sigma_y^2) (and of each
    #: mixture component of the predictive distribution); classification ignores it.
    noise_std: float = 0.5


@dataclass
class SampledOptions(BayesianOptions):
    #: parameter samples per task at evaluation and prediction (the predictive mixture's components).
    samples: int = 5
    #: parameter samples per task in meta-training (the Monte Carlo estimate of the expected loss).
    train_samples: int = 1


#: the options of the family that are standard deviations (> 0), and those that are weights (>= 0)
STANDARD_DEVIATIONS = ("noise_std", "std_init", "prior_std_init")
WEIGHTS = ("kl_weight",)


def check_bayesian_options(options: BayesianOptions) -> None:
    """Refuse the family's options out of range (those a learner has), naming the option and its range."""
    for name in STANDARD_DEVIATIONS:
        value = getattr(options, name, 1.0)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"learner.{name} must be a standard deviation > 0, got {value}")
    for name in WEIGHTS:
        value = getattr(options, name, 0.0)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"learner.{name} must be a weight >= 0 (0: the term is dropped), got {value}")
    for name in ("samples", "train_samples"):
        value = getattr(options, name, 1)
        if value < 1:
            raise ValueError(f"learner.{name} must be >= 1 (parameter samples per task), got {value}")


# ------------------------------------------------------------------------------------- Gaussians
def sample_gaussian(mean: Mapping[str, Tensor], log_std: Mapping[str, Tensor], samples: int) -> Params:
    """``samples`` draws per task of N(mean, exp(log_std)^2) by reparameterisation: mean + exp(log_std) * eps.

    mean and log_std [T, ...] (log_std may also be shared, [...]) -> [T * samples, ...], task-major (row
    t * samples + s), differentiable in mean and log_std.
    """
    drawn = {}
    for name, mu in mean.items():
        mu, sigma = torch.broadcast_tensors(mu, log_std[name].exp())
        mu, sigma = repeat_samples(mu, samples), repeat_samples(sigma, samples)
        drawn[name] = mu + sigma * torch.randn_like(mu)
    return drawn


def kl_diagonal_gaussians(mean_q: Mapping[str, Tensor], log_std_q: Mapping[str, Tensor],
                          mean_p: Mapping[str, Tensor], log_std_p: Mapping[str, Tensor]) -> Tensor:
    """KL(q || p) of diagonal Gaussians summed over every entry of every tensor, per task: [T].

    KL = sum log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2. q's means are
    [T, ...]; the other tensors [T, ...] or shared [...] (broadcast over the tasks).
    """
    total: Tensor | float = 0.0
    for name in mean_q:
        mq, lq, mp, lp = torch.broadcast_tensors(mean_q[name], log_std_q[name], mean_p[name], log_std_p[name])
        terms = lp - lq + ((2 * lq).exp() + (mq - mp).pow(2)) / (2 * (2 * lp).exp()) - 0.5
        total = total + terms.flatten(1).sum(1)
    return torch.as_tensor(total)


def repeat_samples(x: Tensor, samples: int) -> Tensor:
    """[T, ...] -> [T * samples, ...]: each task's rows repeated for its samples (row t * samples + s)."""
    return x.repeat_interleave(samples, dim=0)


def gaussian_negative_log_likelihood(predictions: Tensor, targets: Tensor, noise_std: float | Tensor) -> Tensor:
    """-log N(y; f, sigma^2) summed over each task's points and outputs: [T, N, D] -> [T] (sigma a number, or a
    scalar tensor to differentiate, e.g. a learned sigma_y)."""
    std = torch.as_tensor(noise_std, dtype=targets.dtype, device=targets.device)
    residual = (predictions.to(targets.dtype) - targets) / std
    return (0.5 * residual.pow(2) + std.log() + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def categorical_negative_log_likelihood(logits: Tensor, labels: Tensor) -> Tensor:
    """-log softmax(logits)[y] summed over each task's points: logits [T, N, W], labels [T, N] -> [T]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape).sum(1)


# ------------------------------------------------------------------------------------------- SVGD
def squared_distances(theta: Tensor) -> Tensor:
    """||theta_m - theta_j||^2 of each task's particles: theta [T, M, P] -> [T, M, M].

    From the Gram matrix (|a|^2 + |b|^2 - 2 a.b, clamped at 0), whose memory is M^2, not M^2 P as the
    differences' would be.
    """
    gram = theta @ theta.transpose(1, 2)
    norms = gram.diagonal(dim1=1, dim2=2)
    return (norms.unsqueeze(2) + norms.unsqueeze(1) - 2 * gram).clamp_min(0)


def median_bandwidth(theta: Tensor) -> Tensor:
    """The RBF bandwidth of the median heuristic, h = med^2 / log M (Liu & Wang 2016, section 5), per task.

    theta [T, M, P] (M particles of P numbers) -> h [T]; med is the median of the distances ||theta_i - theta_j||
    over the M (M - 1) / 2 pairs of distinct particles (the midpoint of the middle two for an even count), so
    that sum_j k(theta_j, theta) ~ 1 + M exp(-med^2 / h) = 2 balances a particle's own gradient against the
    others'. h is a heuristic of the current particles, not a function to differentiate: it is detached. One
    particle (no pair, log 1 = 0) gets h = 1, where the kernel only ever compares a particle with itself.
    """
    count = theta.shape[1]
    if count < 2:
        return torch.ones(theta.shape[0], dtype=theta.dtype, device=theta.device)
    rows, cols = torch.triu_indices(count, count, offset=1, device=theta.device)
    distances = squared_distances(theta.detach())[:, rows, cols].sqrt()  # [T, pairs]
    pairs = distances.shape[1]
    median = (distances.kthvalue((pairs + 1) // 2, dim=1).values + distances.kthvalue(pairs // 2 + 1, dim=1).values) / 2
    return median.pow(2).clamp_min(torch.finfo(theta.dtype).tiny) / math.log(count)


def svgd_direction(theta: Tensor, score: Tensor, bandwidth: Tensor | None = None) -> Tensor:
    """SVGD's update direction (Liu & Wang 2016, Algorithm 1) for each task's particles.

        phi(theta_m) = (1/M) sum_j [ k(theta_j, theta_m) score_j + grad_{theta_j} k(theta_j, theta_m) ],
        k(a, b) = exp(-||a - b||^2 / h),   grad_a k(a, b) = -(2 / h) (a - b) k(a, b),

    theta and score (grad log p(theta_j | D)) [T, M, P]; bandwidth h [T] (default :func:`median_bandwidth`)
    -> phi [T, M, P]. The first term drives the particles toward high density, the second keeps them apart.
    """
    h = (median_bandwidth(theta) if bandwidth is None else bandwidth).view(-1, 1, 1)
    kernel = torch.exp(-squared_distances(theta) / h)  # [T, M, M], symmetric: k(theta_j, theta_m) at [m, j]
    attraction = kernel @ score  # sum_j k_jm score_j
    # sum_j grad_{theta_j} k(theta_j, theta_m) = (2 / h) sum_j k_jm (theta_m - theta_j)
    repulsion = (2 / h) * (kernel.sum(2, keepdim=True) * theta - kernel @ theta)
    return (attraction + repulsion) / theta.shape[1]


@dataclass
class SVGD(UpdateRule):
    """theta_m <- theta_m + lr * phi(theta_m) (:func:`svgd_direction`) over the ``particles`` rows of each task.

    The rows of the adapted tensors [T * M, ...] are M particles per task (task-major); the gradients the inner
    loop hands over are those of each particle's objective, -log p(theta_m | D) up to a constant, so the score
    is their negative. The kernel compares whole particles: every adapted tensor, flattened and concatenated.
    """

    lr: float
    particles: int

    def step(self, fast, grads, state, k, tensors):
        names = list(grads)
        tasks = fast[names[0]].shape[0] // self.particles

        def flat(values: Mapping[str, Tensor]) -> Tensor:
            return torch.cat([values[n].reshape(tasks, self.particles, -1) for n in names], -1)

        direction = svgd_direction(flat(fast), -flat(grads))  # [T, M, P]
        stepped, start = dict(fast), 0
        for name in names:
            size = fast[name][0].numel()
            step = direction[..., start:start + size].reshape(fast[name].shape)
            stepped[name] = fast[name] + self.lr * step
            start += size
        return stepped, None


# ---------------------------------------------------------------------------------------- the learner
class BayesianLearner(GradientLearner):
    """A gradient learner whose tasks are adapted from S parameter samples (or particles) each.

    A subclass implements :meth:`sample_outputs` (the S adapted networks' outputs on a batch's queries, in
    evaluation) and ``meta_step``; this class turns the samples into the predictive distribution, the
    predictions and the one-task ``adapt``.
    """

    options: BayesianOptions

    def __init__(self, options: BayesianOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        check_bayesian_options(options)

    # ----------------------------------------------------------------------------- what a subclass sets
    def sample_outputs(self, batch: Task) -> Tensor:
        """The outputs of each task's S adapted networks on its queries (evaluation): [T, S, Q, ways or D]."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- mechanics
    def negative_log_likelihood(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """-log p(targets | outputs), summed over each task's points: [T] (categorical or Gaussian, sigma_y)."""
        if self.task_kind == "classification":
            return categorical_negative_log_likelihood(outputs, targets)
        return gaussian_negative_log_likelihood(outputs, targets, self.noise_std())

    def noise_std(self) -> float | Tensor:
        """sigma_y of the Gaussian likelihood (regression): ``options.noise_std``; a learner that learns it
        (PLATIPUS with ``learn_noise``) returns its tensor."""
        return self.options.noise_std

    def sampled_forward(self, params: Mapping[str, Tensor], x: Tensor, samples: int, training: bool,
                        record: Record | None = None, inner: bool = False) -> Tensor:
        """The networks of S samples per task on that task's inputs: params (adapted names [T * S, ...]),
        x [T, N, ...] -> outputs [T, S, N, ...]."""
        out = self.network_forward(params, repeat_samples(x, samples), training, record, inner=inner)
        return out.unflatten(0, (x.shape[0], samples))

    def adapt_from(self, start: Mapping[str, Tensor], x: Tensor, y: Tensor, training: bool,
                   objective: Objective | None = None, steps: int | None = None,
                   rule: UpdateRule | None = None, keep_graph: bool | None = None) -> Params:
        """The inner loop from per-row starting points (samples or particles) rather than a shared theta.

        start: every network parameter by name, the adapted ones [R, ...] (R = T * S rows); x [R, N, ...],
        y [R, N(, D)]. The steps are :class:`~metalab.nn.inner_loop.InnerLoop`'s (its gradients, clipping and
        update rule, ``rule`` when given); in meta-training their graph is kept unless ``first_order`` (or
        ``keep_graph`` says otherwise).
        """
        loop = self.inner_loop(training)
        rule = rule or loop.rule
        adapted = self.adapted_names()
        create_graph = (training and not self.options.first_order) if keep_graph is None else keep_graph
        objective = objective or self.support_objective()
        fast = dict(start)
        # evaluation: no meta-graph at all; training: first-order steps keep the start in the graph (the gradients are
        # constants), a start outside the graph (BMAML's leader) becomes a leaf to differentiate at
        fast.update({name: fast[name].detach().requires_grad_() for name in adapted
                     if not (training and fast[name].requires_grad)})

        def forward(params: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
            return self.network_forward(params, inputs, training, inner=True, differentiated_twice=create_graph)

        state, tensors = rule.init(fast, adapted), rule.tensors()
        with torch.enable_grad():
            for k in range(loop.steps if steps is None else steps):
                grads = loop.gradients(forward, fast, x, y, adapted, objective, create_graph)
                fast, state = rule.step(fast, dict(zip(adapted, grads)), state, k, tensors)
        return fast

    def batch_norm_record(self) -> Record | None:
        """A dict to record meta-training's BatchNorm statistics in (``bn_mode: running``), else None."""
        return {} if self.options.bn_mode == "running" else None

    def record_batch_norm(self, record: Record | None, tasks: int) -> None:
        """Move the running estimates toward the statistics recorded for ``tasks`` tasks (running BatchNorm)."""
        if record is not None:
            self.update_batch_norm([(record, tasks)])

    def sample_metrics(self, outputs: Tensor, targets: Tensor, loss: Tensor) -> dict[str, Tensor]:
        """Metrics of meta-training from the samples' outputs [T, S, Q, ...]: the loss given and, for
        classification, the accuracy of the mean predictive probability."""
        if self.task_kind == "classification":
            return classification_metrics(mean_log_probability(outputs.detach()), targets, loss)
        return {"loss": loss.detach(), "mse": (outputs.detach().mean(1) - targets).pow(2).mean()}

    # ------------------------------------------------------------------------------- evaluation
    def _outputs(self, batch: Task, steps: int | None) -> Tensor:
        self.check_batch(batch)
        self._steps_override = steps
        try:
            outputs = self.sample_outputs(batch).detach()
        finally:
            self._steps_override = None
        if self.task_kind == "classification":
            outputs = outputs[..., : int(batch.support_y.max()) + 1]
        return outputs

    def predictive_distribution(self, batch: Task, steps: int | None = None) -> distributions.Distribution:
        """The predictive distribution of every query, batch shape [T, Q].

        Classification: ``Categorical`` over the ways with probs = the mean over samples of the softmax.
        Regression: the equal-weight ``MixtureSameFamily`` of the samples' N(f_s(x), sigma_y^2 I), event shape [D].
        """
        outputs = self._outputs(batch, steps)  # [T, S, Q, ...]
        if self.task_kind == "classification":
            return distributions.Categorical(probs=outputs.softmax(-1).mean(1), validate_args=False)
        components = outputs.movedim(1, 2)  # [T, Q, S, D]
        weights = distributions.Categorical(logits=torch.zeros(components.shape[:-1], dtype=components.dtype,
                                                               device=components.device))
        noise = torch.as_tensor(self.noise_std(), dtype=components.dtype).detach().expand_as(components)
        return distributions.MixtureSameFamily(weights, distributions.Independent(
            distributions.Normal(components, noise), 1))

    def predict(self, batch: Task, steps: int | None = None) -> Tensor:
        """Classification: log of the mean predictive probability [T, Q, ways] (valid logits); regression: the
        predictive mean [T, Q, D]. ``steps``: inner steps instead of ``inner_steps_test``."""
        outputs = self._outputs(batch, steps)
        return mean_log_probability(outputs) if self.task_kind == "classification" else outputs.mean(1)

    def predictive(self, batch: Task) -> tuple[Tensor, Tensor]:
        """Regression: the predictive mixture's mean and standard deviation, [T, Q, D] each (``metalab plot``)."""
        mixture = self.predictive_distribution(batch)
        return mixture.mean, mixture.variance.sqrt()

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        """One task: its queries [Q, ...] -> :meth:`predict`'s output [Q, ways or D] (fresh samples per call)."""
        if self.task_kind == "classification":
            check_support_labels(support_y)

        @torch.no_grad()
        def predict(query_x: Tensor) -> Tensor:
            dummy = torch.zeros(query_x.shape[0], *support_y.shape[1:], dtype=support_y.dtype)
            return self.predict(Task(support_x[None], support_y[None], query_x[None], dummy[None]))[0]

        return predict


def mean_log_probability(logits: Tensor) -> Tensor:
    """log of the mean over samples (dim 1) of softmax(logits): [T, S, Q, W] -> [T, Q, W]."""
    return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(logits.shape[1])
