"""Gradient-based (optimisation-based) meta-learners: a few gradient steps adapt a network to each task.

One algorithm per module (registered name in brackets):

- ``maml.py``: MAML, Finn et al. 2017, second order or first order (``maml``)
- ``fomaml.py``: first-order MAML, Finn et al. 2017, section 5.2 (``fomaml``)
- ``metasgd.py``: Meta-SGD, learned per-parameter inner rates, Li et al. 2017 (``metasgd``)
- ``anil.py``: ANIL, only the head adapts, Raghu et al. 2020 (``anil``)
- ``reptile.py``: Reptile, Nichol et al. 2018 (``reptile``)
- ``metalstm.py``: Meta-LSTM, an LSTM whose cell state is the learner's parameters, Ravi & Larochelle 2017
  (``metalstm``)
- ``metacurvature.py``: Meta-Curvature, meta-learned curvature matrices transform the inner gradients, Park &
  Oliva 2019 (``metacurvature``)
- ``tnet.py``: T-net, meta-learned transformation layers after the adapted layers, Lee & Choi 2018 (``tnet``)
- ``mtnet.py``: MT-net, T-net with meta-learned masks choosing the adapted units, Lee & Choi 2018 (``mtnet``)
- ``imaml.py``: iMAML, implicit meta-gradients of a proximal inner problem, Rajeswaran et al. 2019 (``imaml``)
- ``warpgrad.py``: WarpGrad, meta-learned warp layers between the task layers, Flennerhag et al. 2020 (``warpgrad``)
- ``hsml.py``: HSML, MAML from an initialisation gated by a soft hierarchical clustering of the task, Yao et al.
  2019 (``hsml``)
- ``task_mixture.py``: a mixture of meta-learned initialisations that grows with a task stream, Jerfel et al. 2019
  (``task-mixture``)
- ``cmaml.py``: CMAML, a shared module and a private module pruned per task, Song et al. 2020 (``cmaml``)
- ``metanas.py``: MetaNAS, DARTS cells whose architecture is meta-learned with the weights, Elsken et al. 2020
  (``metanas``)

``base.py`` holds what they share (:class:`~metalab.algorithms.gradient.base.GradientLearner`: options,
network, adaptation through :mod:`metalab.nn.inner_loop`, prediction).
"""
