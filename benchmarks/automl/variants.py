"""The variants tried on the way to the target of issue 32 (RESULTS.md, "Trying to meet the target"
and "Meta-feature-informed PMF"), under the leave-one-dataset-out protocol of ``lodo.py``.

For each held-out task the variant sees the other tasks' meta-dataset (``meta.without(task)``), the
held-out task's meta-features and a black box (``TabularObjective``) returning the stored score of a
configuration it asks for; the held-out task's scores are used otherwise only to draw its regret
curve afterwards. One line per variant, in the format of RESULTS.md's tables: mean normalised regret
after 1, 5, 10, 20 and 50 evaluations, and the evaluations its mean curve needs to reach cold-start
TPE's mean regret at 50 (read from ``lodo/summary.csv``).

    nice -n 15 python benchmarks/automl/variants.py --metadataset benchmarks/automl/metadataset.sqlite \\
        --variants automl2-even --tasks even

``--list`` names the variants and the groups (one per table of RESULTS.md). Fitted factorisations
and RGPE's per-task GPs are kept in ``--cache`` (keyed by a digest of the score matrix), so a second
run of a PMF variant costs only its search.
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.defaults import greedy_portfolio
from metalab.automl.leave_one_out import (
    SurrogateCache,
    TabularObjective,
    evaluations_to_match,
    mean_curves,
    regret_curve,
)
from metalab.automl.metadataset import MetaDataset, load_metadataset
from metalab.automl.metafeature_pmf import latent_rows, row_prior
from metalab.automl.pmf import MatrixFactorisation, expected_improvement, factorise, new_row_posterior
from metalab.automl.warmstart import MetaFeatureScaler

HERE = Path(__file__).resolve().parent
AT = (1, 5, 10, 20, 50)


# --- the protocol ---------------------------------------------------------------------------------

class Store:
    """Fitted factorisations per (row normalisation, rank, l2, held-out task) and RGPE's per-task GPs,
    in memory and under ``folder`` (each file named by a digest of the meta-dataset's scores)."""

    def __init__(self, meta: MetaDataset, folder: Path):
        self.meta, self.folder = meta, folder
        digest = hashlib.sha1(meta.scores.tobytes() + "\n".join(meta.tasks).encode()).hexdigest()[:12]
        self.prefix = f"{digest}-"
        self.models: dict[tuple[str, int, float], dict[str, tuple[MatrixFactorisation, float]]] = {}
        self.dirty: set[tuple[str, int, float]] = set()
        self.surrogates: SurrogateCache | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.folder / f"{self.prefix}{name}.pkl"

    def pmf(self, train: MetaDataset, task: str, rows: str = "centred", rank: int = 5,
            l2: float = 0.1) -> tuple[MatrixFactorisation, float]:
        """The factorisation of ``train.scores`` (normalised by :data:`ROWS`\\ [rows]) for held-out ``task``,
        and the scale that puts a new row's centred observations on the model's scale."""
        key = (rows, rank, l2)
        if key not in self.models:
            path = self._path(f"pmf-{rows}-rank{rank}-l2-{l2}")
            self.models[key] = pickle.loads(path.read_bytes()) if path.exists() else {}
        fitted = self.models[key]
        if task not in fitted:
            matrix, scale = ROWS[rows](np.asarray(train.scores, dtype=float))
            fitted[task] = (factorise(matrix, rank=rank, l2=l2), scale)
            self.dirty.add(key)
        return fitted[task]

    def base_predictions(self, train: MetaDataset) -> tuple[np.ndarray, np.ndarray]:
        """RGPE's known-task GPs at every configuration (each fitted on its own task's scores only)."""
        if self.surrogates is None:
            from metalab.automl.rgpe import encode

            path = self._path("rgpe-surrogates")
            self.surrogates = (pickle.loads(path.read_bytes()) if path.exists()
                               else SurrogateCache(encode(self.meta.configurations)))
        before = len(self.surrogates.rows)
        predictions = self.surrogates.predictions(train)
        if len(self.surrogates.rows) != before:
            self._path("rgpe-surrogates").write_bytes(pickle.dumps(self.surrogates))
        return predictions

    def save(self) -> None:
        for key in sorted(self.dirty):
            rows, rank, l2 = key
            self._path(f"pmf-{rows}-rank{rank}-l2-{l2}").write_bytes(pickle.dumps(self.models[key]))
        self.dirty.clear()


@dataclass
class HeldOut:
    """What a variant sees of one fold: the known tasks, the held-out task's meta-features, and the
    black box ``evaluate`` (configuration index -> score), whose answers so far are ``evaluated`` /
    ``observed()``."""

    task: str
    train: MetaDataset
    features: pd.Series
    objective: TabularObjective
    store: Store
    values: list[float] = field(default_factory=list)

    @property
    def evaluated(self) -> list[int]:
        return self.objective.queries

    def evaluate(self, column: int) -> float:
        self.values.append(self.objective(column))
        return self.values[-1]

    def observed(self) -> np.ndarray:
        return np.array(self.values)


Search = Callable[[HeldOut, int], None]


@dataclass(frozen=True)
class Variant:
    name: str
    search: Search
    description: str
    budget: int = 50


def run_variant(meta: MetaDataset, store: Store, variant: Variant, tasks: list[str]) -> np.ndarray:
    """The variant's regret curve on every task of ``tasks``, held out in turn: shape ``(tasks, budget)``."""
    curves = []
    for task in tasks:
        scores = meta.scores[meta.index(task)]
        held = HeldOut(task, meta.without(task), meta.metafeatures.loc[task], TabularObjective(scores), store)
        variant.search(held, variant.budget)
        curves.append(regret_curve(scores, held.evaluated, variant.budget))
    store.save()
    return np.array(curves)


# --- row normalisations of the score matrix -------------------------------------------------------

def centred_rows(scores: np.ndarray) -> tuple[np.ndarray, float]:
    """Each task minus its mean, all divided by one global std (``PMFOptimiser``'s normalisation)."""
    centred = scores - scores.mean(1, keepdims=True)
    scale = float(np.std(centred)) or 1.0
    return centred / scale, scale


def zscored_rows(scores: np.ndarray) -> tuple[np.ndarray, float]:
    """Each task to mean 0 and std 1 (the new row is then z-scored by its own observations)."""
    return (scores - scores.mean(1, keepdims=True)) / np.maximum(scores.std(1, keepdims=True), 1e-6), 0.0


ROWS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, float]]] = {"centred": centred_rows, "zscored": zscored_rows}


def new_row(values: np.ndarray, rows: str, scale: float) -> np.ndarray:
    """The held-out task's observations on the model's scale."""
    if not len(values):
        return values
    if rows == "centred":
        return (values - values.mean()) / scale
    return (values - values.mean()) / max(values.std(), 1e-3) if len(values) > 1 else values * 0.0


# --- priors of the new PMF row [b*, U*] -------------------------------------------------------------

Prior = Callable[[MatrixFactorisation, HeldOut], tuple[np.ndarray, np.ndarray]]


def free_bias(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bias keeps N(0, 1): the new row is centred by its own observed mean."""
    mean, covariance = mean.copy(), covariance.copy()
    mean[0] = 0.0
    covariance[0, :] = covariance[:, 0] = 0.0
    covariance[0, 0] = 1.0
    return mean, covariance


def isotropic_prior(scale: float) -> Prior:
    """``N(0, scale^2 I)`` on ``[b*, U*]`` (Fusi et al. 2018's new-row prior; the module has scale 1)."""
    def prior(model: MatrixFactorisation, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
        size = model.U.shape[1] + 1
        return np.zeros(size), scale**2 * np.eye(size)
    return prior


def known_rows_prior(model: MatrixFactorisation, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
    """Mean 0, covariance of the known tasks' fitted rows: an empirical prior without meta-features
    (the control for the regression priors below)."""
    rows = latent_rows(model)
    return free_bias(np.zeros(rows.shape[1]), np.cov(rows.T) + 1e-6 * np.eye(rows.shape[1]))


def regression_prior(make: Callable[[], object]) -> Prior:
    """Prior mean of the latent row regressed on the standardised meta-features, covariance of the
    regression's 5-fold CV residuals (regression-based latent factors, Agarwal & Chen, KDD 2009;
    :func:`metalab.automl.metafeature_pmf.row_prior`); ``make`` builds the unfitted regressor."""
    def prior(model: MatrixFactorisation, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
        return row_prior(model, held.train.metafeatures, held.features, regression=make())
    return prior


def ridge(alpha: float) -> Callable[[], object]:
    """Ridge regression (Hoerl & Kennard 1970), one output per latent dimension."""
    from sklearn.linear_model import Ridge

    return lambda: Ridge(alpha=alpha)


def ridge_cv() -> object:
    """Ridge whose penalty (0.1-10^4) is chosen by its own efficient leave-one-out / generalised CV."""
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=np.logspace(-1, 4, 11))


def forest() -> object:
    """Random forest (Breiman 2001): 200 trees, at least 2 tasks per leaf."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=0, n_jobs=1)


def nearest_ten() -> object:
    """The mean row of the 10 nearest known tasks by L1 distance of meta-features."""
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(n_neighbors=10, metric="manhattan")


def widened(prior: Prior, factor: float) -> Prior:
    """The latent factors' prior covariance times ``factor`` (the bias keeps N(0, 1))."""
    def scaled(model: MatrixFactorisation, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
        mean, covariance = prior(model, held)
        return free_bias(mean, covariance * factor)
    return scaled


# --- PMF + BO, with the options tried -------------------------------------------------------------

EVIDENCE_GRID = np.exp(np.linspace(np.log(0.25), np.log(8), 16))


def log_evidence(model: MatrixFactorisation, columns: list[int], values: np.ndarray, mean: np.ndarray,
                 covariance: np.ndarray) -> float:
    """Log marginal likelihood of the observations under the new-row prior ``N(mean, covariance)``
    (Bishop 2006, eq. (3.86), up to a constant)."""
    features = np.hstack([np.ones((len(model.mu), 1)), model.V])[columns]
    K = features @ covariance @ features.T + model.noise * np.eye(len(columns))
    residual = values - model.mu[columns] - features @ mean
    return float(-0.5 * (residual @ np.linalg.solve(K, residual) + np.linalg.slogdet(K)[1]))


def misfit(model: MatrixFactorisation, columns: list[int], values: np.ndarray, mean: np.ndarray,
           covariance: np.ndarray) -> float:
    """Mean squared leave-one-out standardised residual of the observations under the posterior."""
    z = []
    for j in range(len(columns)):
        keep = [k for k in range(len(columns)) if k != j]
        m, s = new_row_posterior(model, [columns[k] for k in keep], values[keep], prior_mean=mean,
                                 prior_covariance=covariance)
        z.append((values[j] - m[columns[j]]) / s[columns[j]])
    return float(np.mean(np.square(z)))


@dataclass(frozen=True)
class PMF:
    """Portfolio start, then BO in the latent space of a linear PMF (Fusi, Sheth & Elibol, NeurIPS 2018;
    :mod:`metalab.automl.pmf`): the first ``start`` proposals are the greedy portfolio's first members
    (Wistuba et al. 2015; :func:`~metalab.automl.defaults.greedy_portfolio`), the next one the highest
    prior predictive mean if nothing is observed yet, every later one the highest expected improvement
    (Jones et al. 1998) of the new row's posterior, or its mean (``acquisition="mean"``).

    ``prior``: the new row's prior (default ``N(0, I)``); ``evidence_from``: from that many
    observations on, the prior covariance is scaled per task by empirical Bayes (the scale of
    :data:`EVIDENCE_GRID` of highest marginal likelihood, MacKay 1992); ``switch_above``: from the 4th
    observation on, when :func:`misfit` exceeds it, the next configuration is the one least correlated
    (across the known tasks) with every evaluated one instead.
    """

    start: int = 0
    rank: int = 5
    l2: float = 0.1
    rows: str = "centred"
    acquisition: str = "ei"
    prior: Prior | None = None
    evidence_from: int = 0
    switch_above: float | None = None

    def __call__(self, held: HeldOut, budget: int) -> None:
        model, scale = held.store.pmf(held.train, held.task, self.rows, self.rank, self.l2)
        prior_mean, prior_covariance = self.prior(model, held) if self.prior else (None, None)
        initial = greedy_portfolio(held.train, self.start) if self.start else []
        correlation: np.ndarray | None = None
        for step in range(budget):
            chosen = held.evaluated
            if step < len(initial):
                held.evaluate(initial[step])
                continue
            values = new_row(held.observed(), self.rows, scale)
            covariance = prior_covariance
            if self.evidence_from and len(chosen) >= self.evidence_from:
                assert prior_mean is not None and prior_covariance is not None
                evidence = [log_evidence(model, chosen, values, prior_mean, g**2 * prior_covariance)
                            for g in EVIDENCE_GRID]
                covariance = EVIDENCE_GRID[int(np.argmax(evidence))] ** 2 * prior_covariance
            mean, std = new_row_posterior(model, chosen, values, prior_mean=prior_mean, prior_covariance=covariance)
            if self.switch_above is not None and len(chosen) >= 4 and \
                    misfit(model, chosen, values, prior_mean, covariance) > self.switch_above:
                if correlation is None:
                    correlation = np.corrcoef(np.asarray(held.train.scores, dtype=float).T)
                score = -np.nanmax(correlation[:, chosen], 1)
            elif not chosen or self.acquisition == "mean":
                score = mean.copy()
            else:
                score = expected_improvement(mean, std, float(values.max()))
            score[chosen] = -np.inf
            held.evaluate(int(np.argmax(score)))


# --- other searches -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Portfolio:
    """The greedy portfolio of the known tasks, in order (Wistuba et al. 2015; Feurer et al. 2022,
    Alg. 1; :func:`~metalab.automl.defaults.greedy_portfolio`)."""

    def __call__(self, held: HeldOut, budget: int) -> None:
        for column in greedy_portfolio(held.train, budget):
            held.evaluate(column)


@dataclass(frozen=True)
class AdaptivePortfolio:
    """Greedy portfolio re-weighted after every evaluation: the known tasks are weighted by how well
    their scores order the configurations evaluated so far (fraction of mis-ordered pairs, as in
    active testing, Leite, Brazdil & Vanschoren, MLDM 2012, and the adaptive portfolios of Wistuba,
    Schilling & Schmidt-Thieme, ICDM 2015); weights ``exp(-loss / temperature)``, or equal weights on
    the ``nearest`` tasks of lowest loss; the next member minimises the weighted mean best regret.
    Its own greedy loop, ties to the lower index (``greedy_portfolio`` breaks them by mean regret)."""

    temperature: float = 0.1
    nearest: int | None = None

    def __call__(self, held: HeldOut, budget: int) -> None:
        scores = np.asarray(held.train.scores, dtype=float)
        regret = held.train.normalised_regret()
        best = np.full(len(regret), np.inf)
        for _ in range(budget):
            chosen = held.evaluated
            weights = np.ones(len(regret))
            if chosen:
                loss = np.zeros(len(regret))
                if len(chosen) > 1:
                    y = held.observed()
                    truth = np.sign(y[:, None] - y[None, :])
                    known = np.sign(scores[:, chosen][:, :, None] - scores[:, chosen][:, None, :])
                    loss = ((truth[None] * known) < 0).sum((1, 2)) / (len(chosen) * (len(chosen) - 1))
                if self.nearest:
                    weights = np.zeros(len(regret))
                    weights[np.argsort(loss, kind="stable")[: self.nearest]] = 1.0
                else:
                    weights = np.exp(-(loss - loss.min()) / self.temperature)
            candidate = (weights / weights.sum()) @ np.minimum(best[:, None], regret)
            candidate[chosen] = np.inf
            pick = int(np.argmin(candidate))
            held.evaluate(pick)
            best = np.minimum(best, regret[:, pick])


@dataclass(frozen=True)
class PMFAndRGPE:
    """Ensemble of two acquisitions: after ``start`` portfolio members, the configuration of highest
    summed rank of PMF's EI (with ``prior``) and RGPE's EI (Feurer, Letham & Bakshy, "Scalable
    meta-learning for Bayesian optimization", 2018; :class:`metalab.automl.rgpe.RGPEOptimiser`)."""

    prior: Prior
    start: int = 3

    def __call__(self, held: HeldOut, budget: int) -> None:
        from scipy.stats import rankdata

        from metalab.automl.rgpe import RGPEOptimiser, encode

        model, scale = held.store.pmf(held.train, held.task)
        prior_mean, prior_covariance = self.prior(model, held)
        rgpe = RGPEOptimiser(encode(held.train.configurations), *held.store.base_predictions(held.train))
        for column in greedy_portfolio(held.train, self.start)[:budget]:
            rgpe.observe(column, held.evaluate(column))
        while len(held.evaluated) < budget:
            values = new_row(held.observed(), "centred", scale)
            mean, std = new_row_posterior(model, held.evaluated, values, prior_mean=prior_mean,
                                          prior_covariance=prior_covariance)
            pmf_ei, rgpe_ei = expected_improvement(mean, std, float(values.max())), rgpe.acquisition()
            free = np.setdiff1d(np.arange(len(mean)), held.evaluated)
            score = np.full(len(mean), -np.inf)
            score[free] = rankdata(pmf_ei[free]) + rankdata(rgpe_ei[free])
            column = int(np.argmax(score))
            rgpe.observe(column, held.evaluate(column))


# --- the registry ---------------------------------------------------------------------------------

def _variants() -> list[Variant]:
    out: list[Variant] = []

    def add(name: str, search: Search, description: str, budget: int = 50) -> None:
        out.append(Variant(name, search, description, budget))

    for temperature in (0.3, 0.1, 0.03):
        add(f"adaptive-t{temperature}", AdaptivePortfolio(temperature=temperature),
            f"adaptive portfolio, tasks weighted by ranking loss, softmax temperature {temperature}")
    for nearest in (5, 10, 20, 40):
        add(f"adaptive-nearest{nearest}", AdaptivePortfolio(nearest=nearest),
            f"adaptive portfolio, the {nearest} tasks of lowest ranking loss, equal weights")
    add("portfolio", Portfolio(), "the greedy portfolio (as lodo.py's portfolio)")
    add("portfolio-index-ties", AdaptivePortfolio(temperature=np.inf),
        "the greedy portfolio with ties to the lower index (the adaptive portfolio with equal weights)")
    add("pmf", PMF(), "PMF + EI (as lodo.py's pmf: rank 5, l2 0.1, rows centred)")
    for start in (3, 5, 8, 10):
        add(f"pmf-start{start}", PMF(start=start), f"first {start} from the greedy portfolio, then PMF + EI")
    add("pmf-mean", PMF(acquisition="mean"), "PMF, greedy on the posterior mean instead of EI")
    for rank in (2, 3, 8, 12):
        add(f"pmf-rank{rank}", PMF(rank=rank), f"PMF rank {rank}")
    for l2 in (0.01, 1.0, 10.0):
        add(f"pmf-l2-{l2:g}", PMF(l2=l2), f"PMF l2 {l2:g}")
    add("pmf-prior-scale0.3", PMF(prior=isotropic_prior(0.3)), "PMF, new-row prior N(0, 0.3^2 I)")
    add("pmf-start3-rank8", PMF(start=3, rank=8), "start 3, PMF rank 8")
    add("pmf-start3-l2-10", PMF(start=3, l2=10.0), "start 3, PMF l2 10")
    add("pmf-start3-zscored", PMF(start=3, rows="zscored"), "start 3, rows z-scored")
    add("pmf-start5-l2-1", PMF(start=5, l2=1.0), "start 5, PMF l2 1")
    add("pmf-start5-l2-10", PMF(start=5, l2=10.0), "start 5, PMF l2 10")

    priors: list[tuple[str, Prior, str]] = [("known-rows", known_rows_prior, "mean 0, covariance of the known rows")]
    priors += [(f"ridge{a:g}", regression_prior(ridge(a)), f"meta-feature prior, ridge alpha {a:g}")
               for a in (0.3, 1, 3, 10, 30, 100, 1000)]
    priors += [("ridgecv", regression_prior(ridge_cv), "meta-feature prior, RidgeCV"),
               ("rf", regression_prior(forest), "meta-feature prior, random forest"),
               ("knn10", regression_prior(nearest_ten), "meta-feature prior, mean row of the 10 nearest tasks")]
    priors += [(f"ridge10-cov-x{f:g}", widened(regression_prior(ridge(10)), f),
                f"meta-feature prior, ridge alpha 10, covariance x {f:g}") for f in (0.25, 4)]
    for start in (0, 3):
        for key, prior, text in priors:
            add(f"pmf-start{start}-{key}", PMF(start=start, prior=prior), f"start {start}, {text}")
    for key in ("ridge1", "ridgecv"):
        prior = dict((k, p) for k, p, _ in priors)[key]
        for n in (2, 4):
            add(f"pmf-start3-{key}-eb{n}", PMF(start=3, prior=prior, evidence_from=n),
                f"start 3, {key} prior, empirical-Bayes covariance scale from observation {n} on")
    for threshold in (2.0, 4.0):
        add(f"pmf-start3-ridge1-switch{threshold:g}",
            PMF(start=3, prior=regression_prior(ridge(1)), switch_above=threshold),
            f"start 3, ridge1 prior, diversity switch when the LOO misfit exceeds {threshold:g}")
    add("pmf-rgpe-ensemble", PMFAndRGPE(regression_prior(ridge(1))),
        "start 3, rank-summed EI of PMF (ridge1 prior) and RGPE; 20 evaluations", budget=20)
    return out


VARIANTS: dict[str, Variant] = {v.name: v for v in _variants()}

#: One group per table of RESULTS.md (run with the --tasks named in RESULTS.md).
GROUPS: dict[str, list[str]] = {
    "automl2-stage0": ["portfolio", "portfolio-index-ties", "pmf", *[f"adaptive-t{t}" for t in (0.3, 0.1, 0.03)],
                       *[f"adaptive-nearest{k}" for k in (5, 10, 20, 40)], "pmf-start3", "pmf-start5", "pmf-mean",
                       *[f"pmf-rank{r}" for r in (2, 3, 8, 12)], "pmf-l2-0.01", "pmf-l2-1", "pmf-l2-10",
                       "pmf-prior-scale0.3"],
    "automl2-even": ["pmf", "pmf-start3", "pmf-start5", "pmf-start8", "pmf-start10", "pmf-start3-rank8",
                     "pmf-start3-l2-10", "pmf-start3-zscored", "pmf-start5-l2-1", "pmf-start5-l2-10"],
    "automl3-priors": [f"pmf-start{s}-{k}" for k in ("known-rows", "ridge0.3", "ridge1", "ridge3", "ridge10",
                                                     "ridge30", "ridge100", "ridge1000", "ridgecv", "rf", "knn10",
                                                     "ridge10-cov-x0.25", "ridge10-cov-x4") for s in (0, 3)
                       if (s, k) != (0, "ridge0.3")],
    "automl3-tail": ["pmf-start3-ridge1-eb2", "pmf-start3-ridge1-eb4", "pmf-start3-ridgecv-eb2",
                     "pmf-start3-ridgecv-eb4", "pmf-start3-ridge1-switch2", "pmf-start3-ridge1-switch4"],
    "automl3-all": ["pmf-start3", "pmf-start3-ridge1", "pmf-start3-ridge0.3", "pmf-start3-ridge10",
                    "pmf-start3-ridge100", "pmf-start3-rf", "pmf-start0-ridge1", "pmf-start0-ridge10",
                    "pmf-start3-ridge1-eb2", "pmf-start3-ridge1-switch4"],
    "automl3-ensemble": ["pmf-rgpe-ensemble"],
}


# --- output -----------------------------------------------------------------------------------------

def tpe_reference(summary: Path) -> float | None:
    """Cold-start TPE's mean regret at 50 evaluations on all tasks, from lodo.py's summary.csv."""
    if not summary.exists():
        return None
    table = pd.read_csv(summary)
    rows = table[table["method"] == "tpe"]
    return float(rows["regret@50"].iloc[0]) if len(rows) else None


def table_row(name: str, curves: np.ndarray, reference: float | None) -> str:
    mean = curves.mean(0)
    cells = [f"{mean[n - 1]:.4f}" if n <= len(mean) else "-" for n in AT]
    reach = "-"
    if reference is not None:
        hits = np.nonzero(mean <= reference + 1e-12)[0]
        reach = str(hits[0] + 1) if len(hits) else f"> {len(mean)}"
    return f"| {name} | " + " | ".join(cells) + f" | {reach} |"


def tail_share(curves: np.ndarray, at: int = 10, worst: int = 10) -> str:
    """How much of the mean regret after ``at`` evaluations the ``worst`` tasks carry."""
    regret = np.sort(curves[:, at - 1])[::-1]
    return (f"  the {worst} worst tasks carry {regret[:worst].sum() / regret.sum():.0%} of the mean regret "
            f"@{at} ({regret[worst - 1]:.2f}-{regret[0]:.2f} each)")


def in_sample_portfolio(meta: MetaDataset, at: int = 10) -> float:
    """Mean regret after ``at`` evaluations of the greedy portfolio chosen on *all* tasks (in-sample)."""
    regret = meta.normalised_regret()[:, greedy_portfolio(meta, at)]
    return float(regret.min(1).mean())


def ridge_cv_alphas(meta: MetaDataset, tasks: list[str]) -> dict[str, float]:
    """The penalty RidgeCV picks for the latent rows of the held-out task's fold."""
    store = Store(meta, Path(tempfile.mkdtemp()))
    out = {}
    for task in tasks:
        train = meta.without(task)
        model, _ = store.pmf(train, task)
        x = MetaFeatureScaler.fit(train.metafeatures).transform(train.metafeatures)
        out[task] = float(ridge_cv().fit(x, latent_rows(model)).alpha_)  # type: ignore[attr-defined]
    return out


def lodo_splits(rows_path: Path, methods: list[str], tasks: list[str], paired: tuple[str, str] | None,
                at: int = 10) -> None:
    """lodo.py's rows split by task index: per split, TPE@50 and each method's regret and evaluations
    to reach that split's TPE@50; with ``paired``, the per-task comparison of two methods at ``at``."""
    from scipy import stats

    rows = pd.read_json(rows_path, lines=True)
    for split in ("all", "even", "odd"):
        members = select_tasks(tasks, split)
        curves = mean_curves(rows[rows["task"].isin(members) & rows["method"].isin(["tpe", *methods])])
        reach = evaluations_to_match(curves, "tpe", 50)
        print(f"{split} ({len(members)}): TPE@50 {curves['tpe'][0][49]:.4f}")
        for method in methods:
            print(table_row(method, curves[method][0][None], None).replace(" | - |", f" | {reach[method] or '> 50'} |"))
        if paired:
            a, b = (np.stack([rows[(rows["method"] == m) & (rows["task"] == t)]["curve"].iloc[0] for t in members])
                    [:, at - 1] for m in paired)
            wilcoxon = stats.wilcoxon(a, b, method="exact").pvalue  # exact over the non-zero differences
            print(f"  {paired[0]} against {paired[1]} @{at}: better on {int((a < b).sum())}, worse on "
                  f"{int((a > b).sum())}, equal on {int((a == b).sum())} tasks; paired t-test p = "
                  f"{stats.ttest_rel(a, b).pvalue:.2f}, Wilcoxon signed-rank p = {wilcoxon:.2f}")


def select_tasks(tasks: list[str], which: str) -> list[str]:
    """All tasks, or those of even / odd index in the meta-dataset's task order (the selection split)."""
    return [t for i, t in enumerate(tasks) if which == "all" or i % 2 == (which == "odd")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadataset", default=str(HERE / "metadataset.sqlite"))
    parser.add_argument("--cache", default=str(HERE / "variants-cache"), help="folder for fitted models")
    parser.add_argument("--variants", nargs="+", default=["pmf"], help="variant or group names (see --list)")
    parser.add_argument("--tasks", choices=("all", "even", "odd"), default="all")
    parser.add_argument("--by-split", action="store_true",
                        help="also print each variant's rows on the even / odd tasks")
    parser.add_argument("--summary", default=str(HERE / "lodo" / "summary.csv"), help="lodo.py's summary (TPE@50)")
    parser.add_argument("--list", action="store_true", help="list the variants and groups, then stop")
    parser.add_argument("--tail", action="store_true", help="also print the 10 worst tasks' share of the mean @10")
    parser.add_argument("--in-sample-portfolio", action="store_true",
                        help="print the in-sample greedy portfolio's mean regret @10, then stop")
    parser.add_argument("--ridgecv-alphas", nargs="+", type=int, metavar="INDEX",
                        help="print RidgeCV's penalty for these held-out task indices, then stop")
    parser.add_argument("--lodo-rows", help="instead of running variants: split lodo.py's rows (lodo.jsonl) "
                                            "into all / even / odd tasks for --methods")
    parser.add_argument("--methods", nargs="+", default=["pmf"], help="with --lodo-rows: lodo.py's methods")
    parser.add_argument("--paired", nargs=2, metavar="METHOD", help="with --lodo-rows: compare two methods @10")
    args = parser.parse_args()

    if args.list:
        for variant in VARIANTS.values():
            print(f"{variant.name:32s} {variant.description}")
        for group, names in GROUPS.items():
            print(f"{group:32s} group: {' '.join(names)}")
        return 0
    names = [n for name in args.variants for n in GROUPS.get(name, [name])]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; see --list")

    meta = load_metadataset(args.metadataset)
    if args.lodo_rows:
        lodo_splits(Path(args.lodo_rows), args.methods, meta.tasks, tuple(args.paired) if args.paired else None)
        return 0
    if args.in_sample_portfolio:
        print(f"in-sample greedy portfolio, mean regret @10: {in_sample_portfolio(meta):.4f}")
        return 0
    if args.ridgecv_alphas:
        print(ridge_cv_alphas(meta, [meta.tasks[i] for i in args.ridgecv_alphas]))
        return 0
    store = Store(meta, Path(args.cache))
    reference = tpe_reference(Path(args.summary))
    tasks = select_tasks(meta.tasks, args.tasks)
    splits = {args.tasks: tasks}
    if args.by_split:
        splits |= {s: [t for t in select_tasks(meta.tasks, s) if t in tasks] for s in ("even", "odd")}
    print(f"{len(tasks)} held-out tasks ({args.tasks}); reach: evaluations to TPE@50 on all tasks = "
          + (f"{reference:.4f}" if reference is not None else "unknown (no summary.csv)"), flush=True)
    print("| variant | tasks | @1 | @5 | @10 | @20 | @50 | evaluations to reach TPE@50 |")
    for name in names:
        start = time.perf_counter()
        curves = run_variant(meta, store, VARIANTS[name], tasks)
        seconds = time.perf_counter() - start
        for split, members in splits.items():
            rows = [tasks.index(t) for t in members]
            print(table_row(f"{name} | {split} ({len(rows)})", curves[rows], reference) + f" {seconds:.0f}s",
                  flush=True)
        if args.tail:
            print(tail_share(curves), flush=True)
    return 0


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        sys.exit(main())
