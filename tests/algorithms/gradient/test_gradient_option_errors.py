"""Bad learner options of the gradient-based family are refused when the learner is built, with an error that
names the option and its valid range (before this, a negative or NaN ``inner_lr`` trained into NaN losses and
the trainer blamed ``optim.lr``)."""
from __future__ import annotations

import pytest

from metalab.config import load_recipe
from metalab.train.build import build_learner

BAD_OPTIONS = [
    ("sinusoid-maml-5shot", "learner.inner_lr=-0.1", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-maml-5shot", "learner.inner_lr=nan", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-maml-5shot", "learner.inner_lr=inf", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-maml-5shot", "learner.inner_steps=-1", "learner.inner_steps must be >= 0"),
    ("sinusoid-maml-5shot", "learner.inner_steps_test=-2", "learner.inner_steps_test must be >= 0"),
    ("sinusoid-maml-5shot", "learner.ways=0", "learner.ways must be >= 1"),
    ("sinusoid-maml-5shot", "learner.mlp_hidden=[]", "learner.mlp_hidden must be a non-empty list"),
    ("sinusoid-maml-5shot", "learner.mlp_hidden=[40,0]", "learner.mlp_hidden must be a non-empty list"),
    ("sinusoid-fomaml-5shot", "learner.inner_lr=-1", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-anil-5shot", "learner.inner_lr=-1", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-reptile-5shot", "learner.inner_optimizer=adamw", "learner.inner_optimizer must be 'sgd' or 'adam'"),
    ("sinusoid-reptile-5shot", "learner.adam_betas=[0.9]", r"learner.adam_betas must be \[beta1, beta2\]"),
    ("sinusoid-reptile-5shot", "learner.adam_betas=[1.5,0.999]", r"learner.adam_betas must be \[beta1, beta2\]"),
    ("sinusoid-reptile-5shot", "learner.inner_batch=-1", "learner.inner_batch must be >= 0"),
    ("sinusoid-reptile-5shot", "learner.inner_batch_test=-3", "learner.inner_batch_test must be >= 0"),
    ("sinusoid-metasgd-5shot", "learner.inner_lr=-1", "learner.inner_lr must be a finite step size >= 0"),
    ("sinusoid-metasgd-5shot", "learner.lr_init_range=[0.1,0.01]", "learner.lr_init_range must be"),
    ("sinusoid-metasgd-5shot", "learner.lr_init_range=[-0.1,0.01]", "learner.lr_init_range must be"),
    ("omniglot-maml-5w1s", "learner.hidden=0", "learner.hidden must be >= 1"),
]


@pytest.mark.parametrize("recipe,override,message", BAD_OPTIONS, ids=[case[1] for case in BAD_OPTIONS])
def test_a_bad_option_is_refused_with_its_name(recipe: str, override: str, message: str) -> None:
    config = load_recipe(recipe, [override])
    input_shape = (1, 28, 28) if recipe.startswith("omniglot") else (1,)
    with pytest.raises(ValueError, match=message):
        build_learner(config, input_shape)


@pytest.mark.parametrize("override", ["learner.inner_lr=0", "learner.inner_steps=0", "learner.inner_steps_test=0"])
def test_zero_steps_or_step_size_still_build(override: str) -> None:
    """No adaptation at all is a legitimate baseline (the meta-gradient is then the plain gradient)."""
    import torch

    from metalab.data.task import Task

    learner = build_learner(load_recipe("sinusoid-maml-5shot", [override]), (1,))
    x = torch.linspace(-3, 3, 10).view(1, 10, 1)
    batch = Task(x[:, :5], torch.sin(x[:, :5]), x[:, 5:], torch.sin(x[:, 5:]))
    learner.meta_step(batch)
    plain = learner.network
    if override != "learner.inner_steps_test=0":  # training adapts not at all: the query loss's own gradient
        expected = torch.autograd.grad((plain(x[0, 5:]) - torch.sin(x[0, 5:])).pow(2).mean(), list(plain.parameters()))
        for p, g in zip(plain.parameters(), expected):
            assert torch.allclose(p.grad, g, atol=1e-6)
    assert learner.eval().predict(batch).shape == (1, 5, 1)


def test_equal_lr_init_bounds_give_that_rate_everywhere() -> None:
    learner = build_learner(load_recipe("sinusoid-metasgd-5shot", ["learner.lr_init_range=[0.03,0.03]"]), (1,))
    for rate in learner.inner_lrs:
        assert float(rate.detach().min()) == float(rate.detach().max()) == pytest.approx(0.03)
