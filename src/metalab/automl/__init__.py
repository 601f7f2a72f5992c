"""Meta-learning for AutoML: learn from many prior tables how to configure a learner for a new one.

Data: ``sources`` (the real tables and the selection rules), ``space`` (learners, hyperparameters,
the fixed design), ``evaluate`` (fixed-split CV scores), ``metafeatures`` (pymfe),
``metadataset`` (the resumable SQLite file of scores and meta-features), ``table`` (a user's CSV).

Methods, one module each: ``defaults`` (learned defaults, portfolios, tunability), ``importance``
(fANOVA), ``warmstart`` (kNN warm start), ``rgpe`` (surrogate transfer), ``pmf`` (matrix
factorisation), ``portfolio_pmf`` (portfolio first, then PMF), ``metafeature_pmf`` (PMF with a meta-feature prior),
``selection`` (algorithm-selection meta-models).

Use and evaluation: ``tune`` (warm-started Optuna on a user's table), ``leave_one_out`` (the
leave-one-dataset-out protocol), ``report`` (figures), ``cli`` (``metalab automl ...``).
"""
