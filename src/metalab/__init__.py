"""metalab: meta-learning ("learning to learn") in PyTorch.

Layers, in the order data flows: ``metalab.data`` (tasks) -> ``metalab.algorithms`` (learners, by
family: gradient/, metric/, model/) -> ``metalab.train`` (trainer, evaluator, checkpoints) -> CLI.
"""
__version__ = "0.1.0"
