"""The LSTM optimizer of Andrychowicz et al. 2016 against independent answers: its preprocessing is the paper's
formula on hand-picked gradients; one truncation's meta-gradient is the finite-difference derivative of the
unrolled loss (with the optimizee's gradients as constants, the paper's choice, and without); a checkpointed
optimizer steps exactly as the in-memory one; a resumed meta-training run equals the uninterrupted one."""
from __future__ import annotations

import math

import pytest
import torch

from metalab.nn.gradient_preprocessing import log_sign_preprocess
from metalab.optimizers.baselines import run_baseline, tune_learning_rate
from metalab.optimizers.lstm import LearnedOptimizer, LSTMOptimizerNet, LSTMOptimizerOptions
from metalab.optimizers.problems import ProblemOptions, Quadratics, minibatches, sample_problems
from metalab.optimizers.unroll import Trajectory, optimize, unroll
from metalab.train.l2o import apply_overrides, l2o_config, train_l2o


def test_preprocessing_is_the_papers_formula_on_hand_picked_gradients():
    p = 10.0
    cases = {  # gradient: (log|g|/p, sign g) if |g| >= e^-p else (-1, e^p g)
        1e-20: (-1.0, math.exp(p) * 1e-20),  # tiny
        -3e-6: (-1.0, -3e-6 * math.exp(p)),  # tiny and negative (e^-10 = 4.54e-5)
        0.0: (-1.0, 0.0),  # zero
        1e8: (math.log(1e8) / p, 1.0),  # huge
        -2.5: (math.log(2.5) / p, -1.0),  # negative
        math.exp(-p): (-1.0, 1.0),  # the threshold itself: |g| >= e^-p
    }
    out = log_sign_preprocess(torch.tensor(list(cases), dtype=torch.float64), p)
    expected = torch.tensor(list(cases.values()), dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=1e-15)


def quadratic(dtype=torch.float64) -> Quadratics:
    generator = torch.Generator().manual_seed(5)
    W = torch.randn(2, 3, 3, generator=generator, dtype=dtype)
    return Quadratics(W, torch.randn(2, 3, generator=generator, dtype=dtype),
                      torch.randn(2, 3, generator=generator, dtype=dtype))


def small_net() -> LSTMOptimizerNet:
    torch.manual_seed(1)
    return LSTMOptimizerNet(LSTMOptimizerOptions(hidden=4, output_scale=0.1)).double()


def closed_form_gradient(problem: Quadratics, theta: torch.Tensor) -> torch.Tensor:
    """grad ||W theta - y||^2 = 2 W^T (W theta - y), per problem."""
    residual = torch.einsum("bij,bj->bi", problem.W, theta) - problem.y
    return 2 * torch.einsum("bij,bi->bj", problem.W, residual)


def unrolled_loss(net, weights, problem, steps, fixed_grads=None) -> torch.Tensor:
    """sum_t mean_b f(theta_{t+1}), written independently of metalab.optimizers.unroll: the gradient input is
    the closed form at theta_t, or ``fixed_grads[t]`` (constants)."""
    theta, hidden, total = problem.initial(), None, 0.0
    for t in range(steps):
        grad = closed_form_gradient(problem, theta) if fixed_grads is None else fixed_grads[t]
        update, hidden = torch.func.functional_call(net, weights, (grad, hidden))
        theta = theta + update
        total = total + problem.loss(theta, t + 1).mean()
    return total / steps


@pytest.mark.parametrize("second_order", [False, True])
def test_one_truncations_meta_gradient_is_the_derivative_of_the_unrolled_loss(second_order):
    net, problem, steps = small_net(), quadratic(), 4
    losses, _ = unroll(net, problem, Trajectory(problem.initial(), None), steps, second_order=second_order)
    losses.mean().backward()
    weights = {name: w.detach().clone() for name, w in net.named_parameters()}
    fixed = None
    if not second_order:  # the gradients seen along the trajectory at the current weights, held constant
        with torch.no_grad():
            theta, hidden, fixed = problem.initial(), None, []
            for _ in range(steps):
                fixed.append(closed_form_gradient(problem, theta))
                update, hidden = net(fixed[-1], hidden)
                theta = theta + update
    generator = torch.Generator().manual_seed(2)
    for name, param in net.named_parameters():
        direction = torch.randn(param.shape, generator=generator, dtype=torch.float64)
        eps = 1e-6
        plus = unrolled_loss(net, {**weights, name: weights[name] + eps * direction}, problem, steps, fixed)
        minus = unrolled_loss(net, {**weights, name: weights[name] - eps * direction}, problem, steps, fixed)
        numeric = float(plus - minus) / (2 * eps)
        assert float((param.grad * direction).sum()) == pytest.approx(numeric, rel=1e-6, abs=1e-10), name


def test_dropping_second_derivatives_changes_the_meta_gradient():
    """The two meta-gradients above differ: the test would notice a second-order path left in the first-order one."""
    grads = []
    for second_order in (False, True):
        net, problem = small_net(), quadratic()
        losses, _ = unroll(net, problem, Trajectory(problem.initial(), None), 4, second_order=second_order)
        losses.mean().backward()
        grads.append(net.out.weight.grad.clone())
    assert (grads[0] - grads[1]).abs().max() > 1e-8


def test_checkpointed_learned_optimizer_steps_exactly_as_the_in_memory_one(tmp_path):
    config = l2o_config("l2o-lstm-quadratic", [f"run.dir={tmp_path / 'run'}", "steps=5", "problems_per_step=4",
                                               "net.hidden=6"])
    run = train_l2o(config)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    twin.load_state_dict(model.state_dict())
    loaded = LearnedOptimizer(model.parameters(), checkpoint=run)
    from metalab.optimizers.lstm import load_optimizer_net, read_checkpoint

    in_memory = LearnedOptimizer(twin.parameters(), net=load_optimizer_net(read_checkpoint(run / "last.pt")
                                                                           ["optimizer_net"]))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(4):
        for network, optimizer in ((model, loaded), (twin, in_memory)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(network(x), y).backward()
            optimizer.step()
        for a, b in zip(model.parameters(), twin.parameters()):
            assert torch.equal(a, b)
    moved = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(moved, torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).parameters()))
    assert set(loaded.state_dict()["state"][0]) == {"hidden"}


def test_the_optimizer_class_follows_the_functional_unroll():
    """LearnedOptimizer.step() on a tensor parameter = :func:`optimize` on the same quadratic (float64)."""
    net, problem = small_net(), quadratic()
    expected = optimize(net, problem, 5)
    theta = torch.nn.Parameter(problem.initial())
    optimizer = LearnedOptimizer([theta], net=net)
    for t in range(6):
        loss = problem.loss(theta, t)
        torch.testing.assert_close(loss.detach(), expected[t], rtol=1e-12, atol=1e-12)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()


def test_resumed_meta_training_equals_the_uninterrupted_run(tmp_path):
    common = ["steps=10", "problems_per_step=3", "net.hidden=4", "unroll=5", "horizon=10", "ckpt_every=2"]
    straight = train_l2o(l2o_config("l2o-lstm-quadratic", [f"run.dir={tmp_path / 'a'}", *common]))
    train_l2o(l2o_config("l2o-lstm-quadratic", [f"run.dir={tmp_path / 'b'}", *common[1:], "steps=4"]))
    resumed = train_l2o(l2o_config("l2o-lstm-quadratic", [f"run.dir={tmp_path / 'b'}", *common]), resume=True)
    a = torch.load(straight / "last.pt", weights_only=False)["optimizer_net"]["weights"]
    b = torch.load(resumed / "last.pt", weights_only=False)["optimizer_net"]["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (resumed / "metrics.jsonl").read_text().split(
        "\n") if line]
    assert steps == sorted(set(steps))


def test_baselines_are_per_problem_and_the_tuned_rate_is_the_best_of_the_grid():
    problems = sample_problems(ProblemOptions(family="quadratic", dim=4), 3, seed=0, horizon=10)
    together = run_baseline("adam", 0.1, problems, 10)
    for b in range(3):
        alone = Quadratics(problems.W[b:b + 1], problems.y[b:b + 1], problems.theta0[b:b + 1])
        torch.testing.assert_close(run_baseline("adam", 0.1, alone, 10)[:, 0], together[:, b])
    grid = (1e-4, 1e-2, 1e3)  # 1e3 diverges, 1e-4 hardly moves
    assert tune_learning_rate("sgd", problems, 10, grid) == 1e-2


def test_mlp_problems_are_reproducible_and_minibatches_cover_the_data():
    options = ProblemOptions(family="digits", mlp_hidden=5, batch=100)
    a, b = (sample_problems(options, 2, seed=4, horizon=3) for _ in range(2))
    assert torch.equal(a.loss(a.initial(), 2), b.loss(b.initial(), 2))
    assert a.loss(a.initial(), 0).shape == (2,) and float(a.loss(a.initial(), 0).mean()) == pytest.approx(
        math.log(10), abs=0.3)
    index = minibatches(2, 10, 5, 4, torch.Generator().manual_seed(0))
    assert index.shape == (4, 2, 5)
    assert sorted(index[:2, 0].flatten().tolist()) == list(range(10))  # one pass: every example once


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="unknown learned-optimizer option"):
        l2o_config("l2o-lstm-quadratic", ["problem.widht=3"])
    with pytest.raises(ValueError, match="multiple of horizon / unroll"):
        apply_overrides({"name": "x"}, ["steps=7"])
    with pytest.raises(ValueError, match="problem.activation"):
        l2o_config("l2o-lstm-digits", ["problem.activation=swish"])


def test_omniglot_problems_are_five_way_mlps_on_14px_images():
    """On generated 28x28 'characters' (the library loads the real ones from the Omniglot split)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8 * 20, 1, 28, 28), generator=generator, dtype=torch.uint8)
    items = [list(range(20 * c, 20 * c + 20)) for c in range(8)]
    problems = sample_problems(ProblemOptions(family="omniglot", batch=0), 3, seed=1, horizon=2,
                               omniglot=(images, items))
    assert problems.inputs.shape == (3, 100, 196) and problems.labels.shape == (3, 100)
    assert problems.theta0.shape == (3, 196 * 20 + 20 + 20 * 5 + 5)
    assert torch.equal(problems.index[0, 0], torch.arange(100))  # batch=0: the whole problem each step
    assert float(problems.loss(problems.initial(), 0).mean()) == pytest.approx(math.log(5), abs=0.3)
