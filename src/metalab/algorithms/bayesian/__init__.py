"""Bayesian meta-learners: a prior over the task's parameters is meta-learned, a few examples give a posterior,
and the learner predicts with a distribution (see docs/bayesian.md).

One algorithm per module (registered name in brackets):

- ``platipus.py``: PLATIPUS, probabilistic MAML with a learned prior and amortised variational inference,
  Finn, Xu & Levine 2018 (``platipus``)
- ``bmaml.py``: Bayesian MAML, particles moved by Stein variational gradient descent with the chaser loss,
  Yoon et al. 2018 (``bmaml``)
- ``abml.py``: Amortized Bayesian Meta-Learning, a Gaussian posterior by a few gradient steps on the ELBO from a
  meta-learned prior, Ravi & Beatson 2019 (``abml``)
- ``llama.py``: LLAMA, MAML as hierarchical Bayes with a Laplace approximation, Grant et al. 2018 (``llama``)
- ``neural_statistician.py``: the Neural Statistician, a dataset-level latent from a set encoder, Edwards &
  Storkey 2017 (``neural-statistician``)

``base.py`` holds what the gradient-based ones share (:class:`~metalab.algorithms.bayesian.base.BayesianLearner`:
diagonal Gaussians over the network's parameters, samples folded into the task dimension, the inner loop from
per-sample starting points, SVGD, the predictive distribution of the samples).
"""
