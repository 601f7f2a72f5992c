"""Learning-rate schedules of build_optimizer: the linear annealing against the Reptile authors' formula."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from metalab.config import ConfigError
from metalab.train.build import build_scheduler


def schedule_config(lr: float, steps: int, lr_final=None, lr_step: int = 0):
    return OmegaConf.create({"optim": {"lr": lr, "lr_final": lr_final, "lr_step": lr_step, "lr_gamma": 0.5},
                             "train": {"steps": steps}})


def lrs_used(config, steps: int) -> list[float]:
    """The lr of each optimiser step, as the trainer runs them (step, then scheduler.step)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.lr)
    scheduler = build_scheduler(config, optimizer)
    used = []
    for _ in range(steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("lr, lr_final", [(1.0, 0.0), (0.1, 0.0), (1e-3, 1e-4)])
def test_linear_annealing_follows_the_authors_formula(lr, lr_final):
    # openai/supervised-reptile: frac_done = i / meta_iters;
    # cur_meta_step_size = frac_done * meta_step_size_final + (1 - frac_done) * meta_step_size
    steps = 8
    expected = [i / steps * lr_final + (1 - i / steps) * lr for i in range(steps)]
    assert lrs_used(schedule_config(lr, steps, lr_final), steps) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_steps_past_the_end_keep_the_final_lr():
    used = lrs_used(schedule_config(1.0, 4, 0.25), 7)
    assert used[:4] == pytest.approx([1.0, 0.8125, 0.625, 0.4375]) and used[4:] == pytest.approx([0.25] * 3)


def test_linear_annealing_resumes_from_a_state_dict():
    config = schedule_config(1.0, 10, 0.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(config, optimizer)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = build_scheduler(config, fresh_optimizer)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.6)
    resumed.step()
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_step_decay_and_constant_are_unchanged():
    assert lrs_used(schedule_config(1.0, 10, lr_step=2), 6) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert lrs_used(schedule_config(0.3, 10), 3) == pytest.approx([0.3] * 3)


def test_two_schedules_at_once_are_refused():
    with pytest.raises(ConfigError, match="optim.lr_step=0 or optim.lr_final=null"):
        build_scheduler(schedule_config(1.0, 10, 0.0, lr_step=5),
                        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    with pytest.raises(ConfigError, match="must be positive"):
        build_scheduler(schedule_config(0.0, 10, 0.0), torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0))
