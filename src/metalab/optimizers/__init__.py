"""Learned optimizers: the update rule, or the search itself, is a meta-trained recurrent network.

- ``lstm.py``: the coordinate-wise LSTM optimizer of Andrychowicz et al. 2016, "Learning to learn by gradient
  descent by gradient descent", and :class:`~metalab.optimizers.lstm.LearnedOptimizer`, the meta-trained
  network as a ``torch.optim.Optimizer``;
- ``unroll.py``: its meta-training by truncated back-propagation through unrolled optimisation;
- ``problems.py``: the optimizee families (random quadratics, an MLP on the 8x8 digits, a tiny Omniglot
  classifier);
- ``baselines.py``: the hand-designed optimizers they are compared with (SGD, Adam, RMSprop, Nesterov), their
  learning rates tuned on the training problems;
- ``blackbox.py``: the RNN black-box optimizer of Chen et al. 2017, "Learning to learn without gradient descent
  by gradient descent", on functions drawn from Gaussian-process priors.

Meta-LSTM (Ravi & Larochelle 2017), a learned update inside few-shot learning, is a gradient-based learner:
:mod:`metalab.algorithms.gradient.metalstm`.
"""
