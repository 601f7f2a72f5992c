"""Meta-reinforcement-learning environments: Gymnasium environments whose task (a goal, a reward, a bandit) is
drawn from a seeded distribution, and the task streams the trainer and evaluator read.

Like :mod:`metalab.data`, this layer knows no learner. One module per environment family:

- ``navigation.py``: 2D navigation to a goal in the unit square (Finn et al. 2017, section 5.3)
- ``bandit.py``: Bernoulli multi-armed bandits (Duan et al. 2016, section 4.1)
- ``tabular_mdp.py``: random tabular MDPs (Duan et al. 2016, section 4.2)
- ``cheetah.py``: MuJoCo HalfCheetah running forward/backward or at a target velocity (Finn et al. 2017)
- ``meta_world.py``: Meta-World ML1 (Yu et al. 2019), from the ``metaworld`` package

``tasks.py`` holds what they share: :class:`~metalab.envs.tasks.EnvFamily` and the seeded task streams.
"""
