"""Meta-LSTM (Ravi & Larochelle 2017, "Optimization as a model for few-shot learning"): the learner's inner
steps are the cell updates of an LSTM whose cell state is the learner's parameters.

For each coordinate of the learner's parameters theta (eq. 2-4 of the paper):

    c_t = f_t * c_{t-1} + i_t * c~_t,          c~_t = -grad_{theta_{t-1}} L_t,   c_0 = theta (meta-learned)
    i_t = sigmoid(W_I . [x_t, theta_{t-1}, i_{t-1}] + b_I)                       (the learned "learning rate")
    f_t = sigmoid(W_F . [x_t, theta_{t-1}, f_{t-1}] + b_F)                       (the learned "shrinkage")

where x_t is the output of an ordinary LSTM (20 units, as in the authors' code) that reads the preprocessed
loss and gradient (:func:`~metalab.nn.gradient_preprocessing.log_sign_preprocess`, p = 10; section 3.3). The
weights are shared across coordinates, each coordinate has its own hidden and cell state (section 3.3). With
f_t = 1 and i_t = alpha this is SGD at rate alpha; the biases start near that (b_F in [4, 5], b_I in
[-5, -4], the authors' initialisation). As in the paper (section 3.2), the gradient and loss inputs are
constants of the meta-graph ("we ignore the gradients of the loss with respect to the gradient inputs":
``first_order: true``); the meta-gradient reaches W, b and c_0 through the cell states. BatchNorm uses
batch statistics, never running ones (section 3.4; ``bn_mode: transductive``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.nn.gradient_preprocessing import log_sign_preprocess
from metalab.nn.inner_loop import UpdateRule

#: Meta-LSTM's state between steps: the first layer's (h, c) [T * P, H] and the previous gates f, i [T, P]
Hidden = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass
class MetaLSTMOptions(GradientOptions):
    #: units of the first LSTM layer, which reads the preprocessed loss and gradient (the authors' code: 20).
    lstm_hidden: int = 20
    #: p of the log/sign preprocessing of the gradient and the loss (the paper: 10).
    preprocess_p: float = 10.0
    #: the forget gate's bias starts uniform in [low, high] (the authors': [4, 5], so f_1 is close to 1).
    forget_bias_init: list[float] = field(default_factory=lambda: [4.0, 5.0])
    #: the input gate's bias starts uniform in [low, high] (the authors': [-5, -4], so i_1 is small).
    input_bias_init: list[float] = field(default_factory=lambda: [-5.0, -4.0])
    #: the paper drops the second-order terms (section 3.2); false back-propagates through the gradients too.
    first_order: bool = True


class MetaLearnerLSTM(nn.Module):
    """The coordinate-wise two-layer meta-learner: an LSTM over (loss, gradient) inputs, then the cell update."""

    def __init__(self, hidden: int, forget_bias: tuple[float, float], input_bias: tuple[float, float]) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, hidden)
        self.forget = nn.Linear(hidden + 2, 1)  # W_F . [x_t, theta_{t-1}, f_{t-1}] + b_F
        self.input = nn.Linear(hidden + 2, 1)  # W_I . [x_t, theta_{t-1}, i_{t-1}] + b_I
        with torch.no_grad():
            for weight in self.parameters():
                weight.uniform_(-0.01, 0.01)
            self.forget.bias.uniform_(*forget_bias)
            self.input.bias.uniform_(*input_bias)

    def forward(self, inputs: Tensor, grad: Tensor, theta: Tensor, hidden: Hidden | None) -> tuple[Tensor, Hidden]:
        """inputs [T, P, 4] (preprocessed loss and gradient), grad and theta [T, P] -> theta_t [T, P], state."""
        tasks, coordinates = grad.shape
        h, c = self.lstm(inputs.reshape(tasks * coordinates, 4), None if hidden is None else hidden[:2])
        x = h.view(tasks, coordinates, -1)
        f_prev, i_prev = (torch.zeros_like(grad),) * 2 if hidden is None else hidden[2:]
        f = torch.sigmoid(self.forget(torch.cat([x, theta.unsqueeze(-1), f_prev.unsqueeze(-1)], -1))).squeeze(-1)
        i = torch.sigmoid(self.input(torch.cat([x, theta.unsqueeze(-1), i_prev.unsqueeze(-1)], -1))).squeeze(-1)
        return f * theta - i * grad, (h, c, f, i)  # c_t = f_t c_{t-1} + i_t (-grad)


@dataclass
class MetaLSTMState:
    """The support loss of the step about to be taken [T], and the meta-learner's hidden state."""

    objective: Tensor | None = None
    hidden: Hidden | None = None


@dataclass
class MetaLSTMRule(UpdateRule):
    """The inner step of Meta-LSTM as an :class:`~metalab.nn.inner_loop.UpdateRule` (stateful)."""

    learner: MetaLearnerLSTM
    p: float = 10.0
    stateless = False

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.learner.named_parameters())

    def init(self, fast, adapted):
        return MetaLSTMState()

    def observe(self, state: MetaLSTMState, objective: Tensor) -> MetaLSTMState:
        return MetaLSTMState(objective, state.hidden)

    def step(self, fast: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: MetaLSTMState, k: int,
             tensors: Mapping[str, Tensor]):
        if state.objective is None:
            raise ValueError("Meta-LSTM's step reads the support loss: the inner loop must call observe() first")
        names = list(grads)
        tasks = grads[names[0]].shape[0]
        grad = torch.cat([grads[n].reshape(tasks, -1) for n in names], 1)  # [T, P]
        theta = torch.cat([fast[n].reshape(tasks, -1) for n in names], 1)
        loss = log_sign_preprocess(state.objective, self.p).unsqueeze(1).expand(tasks, grad.shape[1], 2)
        inputs = torch.cat([loss, log_sign_preprocess(grad, self.p)], -1)  # [T, P, 4]: loss(2) + gradient(2)
        theta, hidden = functional_call(self.learner, dict(tensors), (inputs, grad, theta, state.hidden))
        stepped, start = dict(fast), 0
        for name in names:
            size = grads[name][0].numel()
            stepped[name] = theta[:, start:start + size].view_as(grads[name])
            start += size
        return stepped, MetaLSTMState(None, hidden)


@register("metalstm")
class MetaLSTM(MAML):
    """MAML's meta-step (query loss through the adaptation) with the Meta-LSTM update as the inner step; the
    network's initial parameters are the LSTM's initial cell state c_0."""

    options: MetaLSTMOptions

    def __init__(self, options: MetaLSTMOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.lstm_hidden < 1:
            raise ValueError(f"learner.lstm_hidden must be >= 1 (units of the first LSTM layer; the paper: 20), "
                             f"got {options.lstm_hidden}")
        for key in ("forget_bias_init", "input_bias_init"):
            bounds = [float(bound) for bound in getattr(options, key)]
            if not (len(bounds) == 2 and bounds[0] <= bounds[1]):
                raise ValueError(f"learner.{key} must be [low, high] with low <= high, got {bounds}")
        #: the meta-learner (its weights receive meta-gradients; c_0 is ``network``'s parameters)
        forget_low, forget_high = (float(bound) for bound in options.forget_bias_init)
        input_low, input_high = (float(bound) for bound in options.input_bias_init)
        self.meta_learner = MetaLearnerLSTM(options.lstm_hidden, (forget_low, forget_high), (input_low, input_high))

    def update_rule(self, training: bool) -> UpdateRule:
        return MetaLSTMRule(self.meta_learner, self.options.preprocess_p)
