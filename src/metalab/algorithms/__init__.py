"""Meta-learning algorithms, grouped by family: gradient/, metric/, model/."""
from metalab.algorithms.base import LearnerOptions, MetaLearner
from metalab.algorithms.registry import learner_class, learner_names, register

__all__ = ["LearnerOptions", "MetaLearner", "learner_class", "learner_names", "register"]
