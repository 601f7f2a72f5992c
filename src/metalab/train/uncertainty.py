"""How sure a learner is, scored: the uncertainty metrics of the evaluation protocol.

Every metric is computed per episode (one value per task of a batch, as the accuracy and the MSE are), so that
the evaluator reports each as mean +- 95% CI over the fixed episodes (:func:`metalab.train.evaluate.mean_ci95`).

Classification, from the predictive distribution over a task's ways (``Categorical``, batch shape [T, Q]):

* ``nll``: the mean negative log-likelihood of the true labels, -(1/Q) sum_i log p(y_i | x_i, support), nats;
* ``ece``: the expected calibration error of Guo et al. (2017, eq. 3) with **15 equal-width confidence bins**
  B_m = ((m-1)/15, m/15]: sum_m |B_m|/Q |acc(B_m) - conf(B_m)|, the confidence of a query being its largest
  predicted probability and acc(B_m) the fraction of B_m's queries predicted right;
* ``brier``: the multi-class Brier score (Brier 1950), (1/Q) sum_i sum_k (p_ik - [y_i = k])^2, in [0, 2];
* :class:`ReliabilityBins`: the same 15 bins pooled over every query of every episode (the reliability diagram,
  and ``ece_pooled``, the ECE of all queries together, which the per-episode mean over-states: with few queries
  per episode each bin's accuracy is a noisy estimate, and ``|acc - conf|`` is biased upward by that noise).

Regression, from a predictive distribution with event shape [D] (batch shape [T, Q]):

* ``nll``: -(1/Q) sum_i log p(y_i | x_i, support), the log density of the D outputs together;
* ``coverage_50``, ``coverage_95``: the fraction of query outputs (over the points and the D dimensions) inside
  the central 50% / 95% interval of their marginal predictive distribution. y lies in
  [F^-1((1-p)/2), F^-1((1+p)/2)] exactly when (1-p)/2 <= F(y) <= (1+p)/2, so the marginal CDF F is what is
  evaluated (:func:`marginal_cdf`): in closed form for distributions with a ``cdf`` (``Normal``, an ``Independent``
  of them, a ``MixtureSameFamily`` of either, e.g. over posterior samples), otherwise from
  :data:`COVERAGE_SAMPLES` draws of the distribution (the empirical CDF).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily

#: equal-width confidence bins of the ECE and of the reliability diagram (Guo et al. 2017 use 15)
ECE_BINS = 15
#: the central predictive intervals whose empirical coverage is reported for regression
COVERAGE_LEVELS = (0.5, 0.95)
#: draws of the predictive distribution for the coverage where its marginal CDF has no closed form
COVERAGE_SAMPLES = 2000
#: the per-episode metric names, by kind of task
CLASSIFICATION_METRICS = ("nll", "ece", "brier")
REGRESSION_METRICS = ("nll", *(f"coverage_{round(100 * level)}" for level in COVERAGE_LEVELS))


def confidence_bins(confidence: Tensor, bins: int = ECE_BINS) -> Tensor:
    """The bin of each confidence in (0, 1]: m - 1 for ((m-1)/bins, m/bins], as integers in [0, bins)."""
    return (confidence * bins).ceil().long().clamp(1, bins) - 1


@dataclass
class ReliabilityBins:
    """Per confidence bin: how many predictions fell in it, the sum of their confidences and how many were right.

    Sums, so that the bins of several batches (or ranks) add up: ``a + b``.
    """

    count: Tensor  #: [bins]
    confidence: Tensor  #: [bins], sum of the confidences
    correct: Tensor  #: [bins], number right

    @classmethod
    def empty(cls, bins: int = ECE_BINS) -> ReliabilityBins:
        zeros = torch.zeros(bins, dtype=torch.float64)
        return cls(zeros, zeros.clone(), zeros.clone())

    @classmethod
    def of(cls, probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS) -> ReliabilityBins:
        """The bins of predictions ``probabilities`` [..., W] with true ``labels`` [...]."""
        confidence, predicted = probabilities.double().max(-1)
        index = confidence_bins(confidence.flatten(), bins)
        count = torch.zeros(bins, dtype=torch.float64, device=index.device)

        def total(values: Tensor) -> Tensor:
            return count.index_add(0, index, values.flatten().double()).cpu()

        return cls(total(torch.ones_like(confidence)), total(confidence), total((predicted == labels).double()))

    def __add__(self, other: ReliabilityBins) -> ReliabilityBins:
        return ReliabilityBins(self.count + other.count, self.confidence + other.confidence,
                               self.correct + other.correct)

    def accuracy(self) -> Tensor:
        """acc(B_m) [bins] (NaN for an empty bin)."""
        return self.correct / self.count

    def mean_confidence(self) -> Tensor:
        """conf(B_m) [bins] (NaN for an empty bin)."""
        return self.confidence / self.count

    def ece(self) -> float:
        """sum_m |B_m|/n |acc(B_m) - conf(B_m)| over the pooled predictions."""
        n = self.count.sum()
        if n == 0:
            raise ValueError("no predictions in the reliability bins")
        return float((self.correct - self.confidence).abs().sum() / n)

    def as_dict(self) -> dict[str, list[float]]:
        """The bins for JSON: their edges, counts, mean confidence and accuracy (null where a bin is empty)."""
        bins = self.count.numel()

        def listed(values: Tensor) -> list[float | None]:
            return [None if c == 0 else float(v) for v, c in zip(values, self.count)]

        return {"upper_edges": [(m + 1) / bins for m in range(bins)], "count": self.count.tolist(),
                "confidence": listed(self.mean_confidence()), "accuracy": listed(self.accuracy())}

    @classmethod
    def from_dict(cls, saved: dict[str, list]) -> ReliabilityBins:
        """Inverse of :meth:`as_dict`."""
        count = torch.tensor(saved["count"], dtype=torch.float64)

        def summed(means: list[float | None]) -> Tensor:
            return torch.tensor([0.0 if m is None else m for m in means], dtype=torch.float64) * count

        return cls(count, summed(saved["confidence"]), summed(saved["accuracy"]))


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS) -> Tensor:
    """Each episode's ECE [T] from probabilities [T, Q, W] and labels [T, Q] (Guo et al. 2017, eq. 3)."""
    confidence, predicted = probabilities.double().max(-1)  # [T, Q]
    index = confidence_bins(confidence, bins)
    episodes, queries = confidence.shape
    gap = torch.zeros(episodes, bins, dtype=torch.float64, device=confidence.device)
    # per bin: sum of (right - confidence) over its queries; |sum| / Q is its |B_m|/Q |acc - conf|
    gap.scatter_add_(1, index, (predicted == labels).double() - confidence)
    return gap.abs().sum(1) / queries


def classification_scores(distribution: Categorical, labels: Tensor) -> dict[str, Tensor]:
    """Per-episode accuracy, NLL, ECE and Brier score [T] of a predictive ``Categorical`` (batch [T, Q]) at ``labels``
    [T, Q]; the accuracy is that of the most probable class (the largest of its normalised logits, exact where
    rounded probabilities would tie)."""
    probabilities = distribution.probs.double()  # [T, Q, W]
    one_hot = torch.nn.functional.one_hot(labels, probabilities.shape[-1]).double()
    return {
        "accuracy": (distribution.logits.argmax(-1) == labels).double().mean(1),
        "nll": -distribution.log_prob(labels).double().mean(1),
        "ece": expected_calibration_error(probabilities, labels),
        "brier": (probabilities - one_hot).pow(2).sum(-1).mean(1),
    }


def marginal_cdf(distribution: Distribution, value: Tensor) -> Tensor:
    """P(Y_d <= value_d) for each output dimension of a distribution with event shape [D] (or a scalar one):
    ``value`` [..., D] -> [..., D].

    Closed form for a distribution with a ``cdf``, an ``Independent`` of one, a ``MixtureSameFamily`` of either
    (sum_m w_m F_m); else the fraction of :data:`COVERAGE_SAMPLES` draws at most ``value`` (drawn under a fixed
    seed, the global random state untouched).
    """
    if isinstance(distribution, Independent) and distribution.reinterpreted_batch_ndims == 1:
        return marginal_cdf(distribution.base_dist, value)
    if isinstance(distribution, MixtureSameFamily) and len(distribution.event_shape) <= 1:
        weights = distribution.mixture_distribution.probs  # [..., M]
        dims = len(distribution.event_shape)
        components = marginal_cdf(distribution.component_distribution, value.unsqueeze(-1 - dims))  # [..., M(, D)]
        return (weights.reshape(*weights.shape, *([1] * dims)) * components).sum(-1 - dims)
    if not distribution.event_shape:
        try:
            return distribution.cdf(value)
        except NotImplementedError:
            pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        draws = distribution.sample((COVERAGE_SAMPLES,))
    return (draws <= value).double().mean(0)


def central_interval(distribution: Distribution, level: float, iterations: int = 60) -> tuple[Tensor, Tensor]:
    """The central ``level`` interval [F^-1((1-p)/2), F^-1((1+p)/2)] of each output's marginal predictive, [..., D]
    each: bisection on :func:`marginal_cdf` between the mean -+ (50 std + 1)."""
    mean, spread = distribution.mean, distribution.variance.sqrt() * 50 + 1

    def quantile(target: float) -> Tensor:
        low, high = mean - spread, mean + spread
        for _ in range(iterations):
            middle = (low + high) / 2
            below = marginal_cdf(distribution, middle) < target
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return (low + high) / 2

    return quantile((1 - level) / 2), quantile((1 + level) / 2)


def regression_scores(distribution: Distribution, targets: Tensor) -> dict[str, Tensor]:
    """Per-episode NLL and coverage of the central intervals [T] of a predictive distribution with batch shape
    [T, Q] and event shape [D] at ``targets`` [T, Q, D]."""
    if tuple(distribution.batch_shape) != tuple(targets.shape[:2]) or tuple(distribution.event_shape) != tuple(
            targets.shape[2:]):
        raise ValueError(f"a regression learner's predictive_distribution must have batch shape [T, Q] = "
                         f"{list(targets.shape[:2])} and event shape [D] = {list(targets.shape[2:])}, got "
                         f"{list(distribution.batch_shape)} and {list(distribution.event_shape)}")
    scores = {"nll": -distribution.log_prob(targets).double().mean(1)}
    position = marginal_cdf(distribution, targets).double()  # F(y), [T, Q, D]
    for level, name in zip(COVERAGE_LEVELS, REGRESSION_METRICS[1:]):
        inside = ((1 - level) / 2 <= position) & (position <= (1 + level) / 2)
        scores[name] = inside.double().flatten(1).mean(1)
    return scores
