"""Meta-LSTM against independent answers: with its gates fixed (forget = 1, input = alpha) its inner loop is
plain SGD, bit for bit; its meta-gradient (second order) is the finite-difference derivative of the query loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from test_gradient_learners import build, make_tasks

from metalab.algorithms.gradient.fomaml import FirstOrderMAML
from metalab.algorithms.gradient.metalstm import MetaLSTM, MetaLSTMRule, MetaLSTMState
from metalab.data.task import Task


def fix_gates(learner: MetaLSTM, forget_bias: float, input_bias: float) -> None:
    with torch.no_grad():
        for gate, bias in ((learner.meta_learner.forget, forget_bias), (learner.meta_learner.input, input_bias)):
            gate.weight.zero_()
            gate.bias.fill_(bias)


def test_fixed_gates_forget_one_input_alpha_are_plain_sgd_exactly():
    """sigmoid(50) rounds to 1 and sigmoid(0) is 0.5 in float64: c_t = c_{t-1} - 0.5 grad, SGD at 0.5."""
    batch = make_tasks(count=2)
    ours = build(MetaLSTM, inner_steps=3)
    fix_gates(ours, 50.0, 0.0)
    sgd = build(FirstOrderMAML, inner_steps=3, inner_lr=0.5)
    sgd.network.load_state_dict(ours.network.state_dict())
    adapted = ours.adapt_tasks(batch.support_x, batch.support_y, training=True)
    expected = sgd.adapt_tasks(batch.support_x, batch.support_y, training=True)
    for name in ours.adapted_names():
        assert torch.equal(adapted[name], expected[name]), name
    # and the meta-gradient of the initial parameters c_0 is first-order MAML's
    ours.meta_step(batch)
    sgd.meta_step(batch)
    for (name, p), q in zip(ours.network.named_parameters(), sgd.network.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-13, msg=name)


def test_fixed_gates_at_another_rate_are_sgd_to_rounding():
    batch = make_tasks(count=1)
    ours = build(MetaLSTM, inner_steps=2)
    fix_gates(ours, 50.0, float(torch.logit(torch.tensor(0.1, dtype=torch.float64))))
    sgd = build(FirstOrderMAML, inner_steps=2, inner_lr=0.1)
    sgd.network.load_state_dict(ours.network.state_dict())
    adapted = ours.adapt_tasks(batch.support_x, batch.support_y, training=False)
    expected = sgd.adapt_tasks(batch.support_x, batch.support_y, training=False)
    for name in ours.adapted_names():
        torch.testing.assert_close(adapted[name], expected[name], rtol=0, atol=1e-14)


def regression_tasks() -> Task:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 2, generator=generator, dtype=torch.float64)
    y = torch.sin(x.sum(-1, keepdim=True))
    return Task(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])


def query_loss(learner: MetaLSTM, batch: Task) -> float:
    """The mean query loss after adapting in meta-training mode (what meta_step differentiates)."""
    with torch.enable_grad():
        fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=True)
    out = learner.query_outputs(fast, batch.query_x, training=True)
    return float(learner.loss_fn(out, batch.query_y).sum() / len(batch))


def directional_difference(learner: MetaLSTM, batch: Task, param: torch.Tensor, direction: torch.Tensor,
                           eps: float = 1e-6) -> float:
    """(L(w + eps d) - L(w - eps d)) / (2 eps) of the query loss in the direction d of one weight."""
    with torch.no_grad():
        param.add_(eps * direction)
        plus = query_loss(learner, batch)
        param.sub_(2 * eps * direction)
        minus = query_loss(learner, batch)
        param.add_(eps * direction)
    return (plus - minus) / (2 * eps)


def test_second_order_meta_gradient_of_the_lstm_weights_matches_finite_differences():
    batch = regression_tasks()
    torch.manual_seed(0)
    options = MetaLSTM.Options(name="x", kind="regression", backbone="mlp", mlp_hidden=[5], ways=1, inner_steps=2,
                               lstm_hidden=3, first_order=False, input_bias_init=[-1.0, -1.0])
    learner = MetaLSTM(options, (2,)).double()
    learner.meta_step(batch)
    weights = dict(learner.meta_learner.named_parameters())
    analytic = {name: w.grad.clone() for name, w in weights.items()}
    assert any(g.abs().max() > 1e-6 for g in analytic.values())

    generator = torch.Generator().manual_seed(0)
    for name in ("lstm.weight_ih", "input.weight", "input.bias", "forget.weight"):
        direction = torch.randn(weights[name].shape, generator=generator, dtype=torch.float64)
        numeric = directional_difference(learner, batch, weights[name], direction)
        assert float((analytic[name] * direction).sum()) == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="learner.lstm_hidden"):
        build(MetaLSTM, lstm_hidden=0)
    with pytest.raises(ValueError, match="learner.input_bias_init"):
        build(MetaLSTM, input_bias_init=[1.0, -1.0])


@dataclass
class Replay(MetaLSTMRule):
    """Meta-LSTM's step that records its gradient and loss inputs, or replays recorded ones as constants."""

    recorded: list = field(default_factory=list)
    replay: bool = False

    def step(self, fast, grads, state, k, tensors):
        if self.replay:
            grads, objective = self.recorded[k]
            state = MetaLSTMState(objective, state.hidden)
        else:
            self.recorded.append(({n: g.detach().clone() for n, g in grads.items()}, state.objective.detach().clone()))
        return super().step(fast, grads, state, k, tensors)


def test_first_order_meta_gradient_is_the_derivative_with_the_gradient_and_loss_inputs_held_constant():
    """Section 3.2: the meta-gradient ignores how the gradient and loss inputs depend on the meta-learner: it is the
    derivative of the query loss along the trajectory's own inputs, replayed as constants."""
    batch = regression_tasks()
    torch.manual_seed(0)
    options = MetaLSTM.Options(name="x", kind="regression", backbone="mlp", mlp_hidden=[5], ways=1, inner_steps=3,
                               lstm_hidden=3, first_order=True, input_bias_init=[-1.0, -1.0])
    learner = MetaLSTM(options, (2,)).double()
    rule = Replay(learner.meta_learner, options.preprocess_p)
    learner.update_rule = lambda training: rule  # type: ignore[method-assign]
    learner.meta_step(batch)
    rule.replay = True
    weights = dict(learner.meta_learner.named_parameters())
    initial = dict(learner.network.named_parameters())

    generator = torch.Generator().manual_seed(1)
    for name, param in [*(("lstm." + k, weights["lstm." + k]) for k in ("weight_ih", "bias_hh")),
                        ("forget.weight", weights["forget.weight"]), ("input.bias", weights["input.bias"]),
                        ("c_0 body.net.0.weight", initial["body.net.0.weight"])]:
        analytic = param.grad.clone()
        direction = torch.randn(param.shape, generator=generator, dtype=torch.float64)
        numeric = directional_difference(learner, batch, param, direction)
        assert float((analytic * direction).sum()) == pytest.approx(numeric, rel=1e-5, abs=1e-9), name
