"""Meta-training, evaluation, checkpoints and logging: one trainer for every learner."""
