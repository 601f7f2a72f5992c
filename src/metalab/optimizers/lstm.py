"""The coordinate-wise LSTM optimizer (Andrychowicz et al. 2016, section 2.1 and 3, appendix A), and the
meta-trained network as a ``torch.optim.Optimizer``.

Every coordinate i of the optimizee's parameters theta is updated by the same two-layer LSTM m (20 units a
layer), with its own hidden state:

    [g_t, h_{t+1}] = m(preprocess(grad_t), h_t; phi),        theta_{t+1} = theta_t + output_scale * g_t     (eq. 1)

with the log/sign preprocessing of appendix A (:func:`~metalab.nn.gradient_preprocessing.log_sign_preprocess`,
p = 10) and the output scaled by 0.1, as in the paper.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metalab.nn.gradient_preprocessing import log_sign_preprocess
from metalab.utils.checksum import torch_load_checked

#: the LSTM's hidden state: [2 * layers, N, hidden] ((h, c) of each layer, stacked) for N coordinates
Hidden = Tensor


@dataclass
class LSTMOptimizerOptions:
    """The optimizer network's shape; the paper's values are the defaults."""

    #: units of each LSTM layer.
    hidden: int = 20
    #: stacked LSTM layers.
    layers: int = 2
    #: p of the gradient preprocessing.
    preprocess_p: float = 10.0
    #: the network's output times this is the step.
    output_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise ValueError(f"the LSTM optimizer needs hidden >= 1 and layers >= 1, got hidden={self.hidden}, "
                             f"layers={self.layers}")
        if not self.output_scale > 0:
            raise ValueError(f"output_scale must be > 0 (the paper: 0.1), got {self.output_scale}")


class LSTMOptimizerNet(nn.Module):
    """m(preprocess(grad), h; phi): N coordinates' gradients [N] -> steps [N], weights shared by coordinates."""

    def __init__(self, options: LSTMOptimizerOptions | None = None) -> None:
        super().__init__()
        self.options = options or LSTMOptimizerOptions()
        sizes = [2] + [self.options.hidden] * self.options.layers
        self.cells = nn.ModuleList(nn.LSTMCell(inputs, self.options.hidden) for inputs in sizes[:-1])
        self.out = nn.Linear(self.options.hidden, 1)

    def initial_hidden(self, grad: Tensor) -> Hidden:
        return grad.new_zeros(2 * self.options.layers, grad.numel(), self.options.hidden)

    def forward(self, grad: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        """grad [N] (or any shape, taken flat) -> (step of theta [same shape], the next hidden state)."""
        if hidden is None:
            hidden = self.initial_hidden(grad)
        x = log_sign_preprocess(grad.reshape(-1), self.options.preprocess_p)  # [N, 2]
        states = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, (hidden[2 * layer], hidden[2 * layer + 1]))
            states += [h, c]
            x = h
        step = self.options.output_scale * self.out(x).squeeze(-1)
        return step.view_as(grad), torch.stack(states)


def save_optimizer_net(net: LSTMOptimizerNet) -> dict[str, Any]:
    """What a checkpoint holds of the network: its options and weights."""
    return {"options": asdict(net.options), "weights": net.state_dict()}


def load_optimizer_net(saved: dict[str, Any]) -> LSTMOptimizerNet:
    net = LSTMOptimizerNet(LSTMOptimizerOptions(**saved["options"]))
    net.load_state_dict(saved["weights"])
    return net


def read_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """The saved network of a learned-optimizer run: ``checkpoint`` is the run directory (its ``last.pt``) or a
    checkpoint file."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no learned-optimizer checkpoint at {path}: give the run directory of "
                                f"`metalab train l2o-lstm-...` (it holds last.pt) or a checkpoint file")
    state = torch_load_checked(path, weights_only=False)
    if "optimizer_net" not in state:
        raise ValueError(f"{path} is not a learned-optimizer checkpoint (no optimizer_net); it is written by "
                         f"`metalab train l2o-lstm-...`")
    return state


class LearnedOptimizer(torch.optim.Optimizer):
    """A meta-trained LSTM optimizer as a ``torch.optim.Optimizer``: ``step()`` moves each parameter by the
    network's output for its gradient, each coordinate with its own hidden state (kept in ``self.state``).

    Args:
        params: the parameters to optimise (or parameter groups).
        checkpoint: a run directory of ``metalab train l2o-lstm-...`` or one of its checkpoint files.
        net: an in-memory network instead (exactly one of ``checkpoint`` and ``net``).

    Example::

        optimizer = LearnedOptimizer(model.parameters(), checkpoint="runs/l2o-lstm-digits")
        loss.backward(); optimizer.step(); optimizer.zero_grad()
    """

    def __init__(self, params: Iterable[Any], checkpoint: str | Path | None = None,
                 net: LSTMOptimizerNet | None = None) -> None:
        if (checkpoint is None) == (net is None):
            raise ValueError("LearnedOptimizer needs exactly one of checkpoint= (a run directory or checkpoint file) "
                             "and net= (an LSTMOptimizerNet)")
        if checkpoint is not None:
            net = load_optimizer_net(read_checkpoint(checkpoint)["optimizer_net"])
        super().__init__(params, {})
        assert net is not None
        self.net = net.requires_grad_(False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                net = self.net.to(dtype=p.dtype, device=p.device)
                update, state["hidden"] = net(p.grad, state.get("hidden"))
                p.add_(update)
        return loss
