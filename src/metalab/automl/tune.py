"""Tuning a user's table for real: an Optuna study over the flat space, warm-started from the
meta-dataset, each trial a cross-validated fit; the best configuration refitted on all rows and saved.

With an Optuna storage URL (``sqlite:///study.db``, ``postgresql://...``) several processes or
machines run the same study: each calls :func:`tune` with the same storage and study name, the
study stops at ``trials`` completed trials in total (``MaxTrialsCallback``), and the warm-start
configurations are enqueued once, by the first process to find the study empty.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalab.automl.evaluate import FOLDS, cross_validate, fold_indices
from metalab.automl.metadataset import MetaDataset
from metalab.automl.sources import TabularTask
from metalab.automl.space import build_estimator, configuration, suggest_configuration
from metalab.utils.io import atomic_write, atomic_write_text

WARM_STARTS = ("knn", "portfolio", "portfolio-pmf", "metafeature-pmf", "none")
#: The warm starts that choose one trial at a time from the scores so far (:func:`pmf_warm_start`).
SEQUENTIAL_WARM_STARTS = ("portfolio-pmf", "metafeature-pmf")
#: Configurations enqueued by a warm start (kNN: the best of this many nearest tasks; portfolio: its first members;
#: portfolio-pmf, metafeature-pmf: this many trials chosen one at a time, the portfolio's first members then PMF + EI).
WARM_START_SIZE = 10


@dataclass
class TuneResult:
    """What :func:`tune` leaves in the run directory: the report and the refitted best model."""

    run_dir: Path
    best_score: float
    best_learner: str
    best_values: dict
    trials: int


def warm_start_configurations(task: TabularTask, meta: MetaDataset, strategy: str, size: int = WARM_START_SIZE) -> list:
    """The design configurations to evaluate first: the best of the ``size`` nearest tasks by pymfe
    meta-features (``knn``), or the first ``size`` of the greedy portfolio (``portfolio``)."""
    if strategy == "knn":
        import pandas as pd

        from metalab.automl.metafeatures import metafeatures
        from metalab.automl.warmstart import warm_start_configurations as nearest_best

        features = pd.Series(metafeatures(task.x, task.y))
        return [meta.configurations[i] for i in nearest_best(meta, features, size)]
    if strategy == "portfolio":
        from metalab.automl.defaults import greedy_portfolio

        return [meta.configurations[i] for i in greedy_portfolio(meta, size)]
    if strategy in SEQUENTIAL_WARM_STARTS:
        raise ValueError(f"the {strategy} warm start is sequential (each choice depends on the scores so far); "
                         "use pmf_warm_start")
    if strategy == "none":
        return []
    raise ValueError(f"unknown warm start {strategy!r}; choose one of {', '.join(WARM_STARTS)}")


def pmf_warm_start(study, objective, meta: MetaDataset, size: int, task: TabularTask | None = None,
                   strategy: str = "portfolio-pmf") -> list:
    """Run the first ``size`` trials of ``study`` one at a time, each the configuration that the
    portfolio-then-PMF optimiser (:mod:`metalab.automl.portfolio_pmf`; with ``metafeature-pmf``, its
    prior predicted from ``task``'s meta-features, :mod:`metalab.automl.metafeature_pmf`) proposes
    given the scores of the ones before; returns the configurations in the order they ran. (The
    objective scores a failing fit as a constant prediction; a trial that still did not complete
    counts as 0 for the optimiser.)"""
    import optuna

    from metalab.automl.warmstart import enqueue_configurations, trial_params

    if strategy == "portfolio-pmf":
        from metalab.automl.portfolio_pmf import portfolio_pmf_optimiser

        optimiser = portfolio_pmf_optimiser(meta)
    elif strategy == "metafeature-pmf":
        import pandas as pd

        from metalab.automl.metafeature_pmf import metafeature_pmf_optimiser
        from metalab.automl.metafeatures import metafeatures

        if task is None:
            raise ValueError("the metafeature-pmf warm start needs the task (its meta-features)")
        optimiser = metafeature_pmf_optimiser(meta, pd.Series(metafeatures(task.x, task.y)))
    else:
        raise ValueError(f"{strategy!r} is not a sequential warm start; those are {', '.join(SEQUENTIAL_WARM_STARTS)}")
    chosen = []
    for _ in range(min(size, len(meta.configurations))):
        index = optimiser.propose()
        config = meta.configurations[index]
        enqueue_configurations(study, [config])
        study.optimize(objective, n_trials=1)
        params = trial_params(config)
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.params == params]
        optimiser.observe(index, float(done[-1].value) if done else 0.0)
        chosen.append(config)
    return chosen


def tune(task: TabularTask, run_dir: str | Path, trials: int, warm_start: str = "knn", meta: MetaDataset | None = None,
         storage: str | None = None, study_name: str | None = None, seed: int = 0, folds: int = FOLDS) -> TuneResult:
    """Run (or join) the study, then refit its best configuration on all rows and write
    ``model.joblib`` and ``report.json`` into ``run_dir``."""
    import joblib
    import optuna

    if warm_start != "none" and meta is None:
        raise ValueError(f"--warm-start {warm_start} needs the meta-dataset; build it or pass --warm-start none")
    optuna.logging.set_verbosity(logging.WARNING)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    study = optuna.create_study(direction="maximize", storage=storage, study_name=study_name or run_dir.name,
                                sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True), load_if_exists=True)
    enqueued = []
    sequential = warm_start in SEQUENTIAL_WARM_STARTS and not study.trials
    if not study.trials and not sequential:
        from metalab.automl.warmstart import enqueue_configurations

        enqueued = warm_start_configurations(task, meta, warm_start) if meta is not None else []
        enqueue_configurations(study, enqueued[:trials])
    splits = fold_indices(task.name, task.y, folds, seed)

    def objective(trial) -> float:
        learner, unit = suggest_configuration(trial)
        config = configuration(learner, unit, f"trial-{trial.number}")
        results = cross_validate(config, task.x, task.y, splits, seed=seed)
        trial.set_user_attr("values", json.dumps(config.values, default=str))
        trial.set_user_attr("fit_seconds", float(sum(r.fit_seconds for r in results)))
        return float(np.mean([r.score for r in results]))

    if sequential:
        assert meta is not None  # checked above: a warm start needs the meta-dataset
        enqueued = pmf_warm_start(study, objective, meta, min(WARM_START_SIZE, trials), task, warm_start)
    complete = (optuna.trial.TrialState.COMPLETE,)
    if len(study.get_trials(deepcopy=False, states=complete)) < trials:  # the callback stops only after a trial
        study.optimize(objective, n_trials=trials, callbacks=[optuna.study.MaxTrialsCallback(trials, states=complete)])
    best = study.best_trial
    assert best.value is not None  # a complete trial's (single-objective study)
    learner = best.params["learner"]
    values = json.loads(best.user_attrs["values"])
    model = build_estimator(learner, values, seed=seed, train_rows=len(task.y))
    start = time.perf_counter()
    model.fit(task.x, task.y)
    atomic_write(run_dir / "model.joblib", lambda file: joblib.dump(model, file))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    report = {
        "task": task.name, "target": task.target, "rows": int(len(task.y)), "features": int(task.x.shape[1]),
        "classes": int(task.classes), "metric": f"balanced accuracy, {folds}-fold stratified CV",
        "warm_start": warm_start, "enqueued": [c.id for c in enqueued], "storage": storage, "study": study.study_name,
        "best": {"trial": best.number, "score": best.value, "learner": learner, "values": values,
                 "refit_seconds": time.perf_counter() - start},
        "trials": [{"number": t.number, "learner": t.params["learner"], "score": t.value,
                    "values": json.loads(t.user_attrs.get("values", "{}")),
                    "params": {k: v for k, v in t.params.items() if k != "learner"},
                    "fit_seconds": t.user_attrs.get("fit_seconds")} for t in completed],
    }
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=1, default=str))
    return TuneResult(run_dir, float(best.value), learner, values, len(completed))
