"""Bayesian meta-learners: a meta-learned prior over task parameters, a posterior per task from its few examples,
and predictions that say how sure they are (``predictive_distribution``, scored by the evaluator's NLL,
calibration and coverage, :mod:`metalab.train.uncertainty`).

One algorithm per module (registered name in brackets):

- ``llama.py``: LLAMA, MAML as hierarchical Bayes with a Kronecker-factored Laplace posterior per task,
  Grant et al. 2018 (``llama``)
- ``neural_statistician.py``: the Neural Statistician, a context latent per data set from a set encoder,
  few-shot classification by its posterior, Edwards & Storkey 2017 (``neural-statistician``)
- ``platipus.py``: PLATIPUS, a learned prior over initial parameters and a variational posterior,
  Finn et al. 2018 (``platipus``)
- ``bmaml.py``: Bayesian MAML, Stein variational gradient descent over particles with the chaser loss,
  Yoon et al. 2018 (``bmaml``)
- ``abml.py``: amortised Bayesian meta-learning, a variational posterior per task by a few gradient steps
  from a meta-learned prior, Ravi & Beatson 2019 (``abml``)

``base.py`` holds what they share; the Laplace approximation's curvature (K-FAC) is :mod:`metalab.nn.laplace`.
"""
