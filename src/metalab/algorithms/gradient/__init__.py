"""Gradient-based meta-learners, one algorithm per module."""
