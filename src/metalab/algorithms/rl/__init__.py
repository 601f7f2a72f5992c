"""Meta-reinforcement learners: a policy that adapts to a new task (a goal, a reward, a bandit) from a few
episodes, on the environments of :mod:`metalab.envs`.

One algorithm per module (registered name in brackets):

- ``maml_rl.py``: MAML for RL, Finn et al. 2017: policy-gradient inner steps, TRPO outer step (``maml-rl``)
- ``emaml.py``: E-MAML, Stadie et al. 2018: MAML-RL plus credit to the pre-update episodes (``emaml``)
- ``rl2.py``: RL^2, Duan et al. 2016: a GRU policy that learns within its hidden state, TRPO (``rl2``)
- ``pearl.py``: PEARL, Rakelly et al. 2019: a probabilistic context encoder and off-policy SAC (``pearl``)

``base.py`` holds what they share (options, advantages, the evaluation protocol); ``components/`` the
policies, rollouts, returns and advantages, the policy-gradient objectives with TRPO, and PEARL's context
encoder, soft actor-critic and replay buffers.
"""
