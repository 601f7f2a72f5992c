"""Meta-reinforcement learners: a policy that adapts to a new task (a goal, a reward, a bandit) from a few
episodes, on the environments of :mod:`metalab.envs`.

One algorithm per module (registered name in brackets):

- ``maml_rl.py``: MAML for RL, Finn et al. 2017: policy-gradient inner steps, TRPO outer step (``maml-rl``)
- ``emaml.py``: E-MAML, Stadie et al. 2018: MAML-RL plus credit to the pre-update episodes (``emaml``)
- ``rl2.py``: RL^2, Duan et al. 2016: a GRU policy that learns within its hidden state, TRPO (``rl2``)

``base.py`` holds what they share (options, advantages, the evaluation protocol); ``components/`` the
policies, rollouts, returns and advantages, and the policy-gradient objectives with TRPO.
"""
