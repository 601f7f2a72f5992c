"""Gradient-based meta-learners, one algorithm per module: maml (and first-order MAML), fomaml, metasgd, anil,
reptile. ``base.py`` holds what they share (options, network, adaptation, prediction)."""
