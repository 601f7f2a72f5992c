"""CMAML (Song et al. 2020, "Learning to Customize Model Structures for Few-shot Dialogue Generation Tasks"):
MAML over a shared, a gating and a private module, the private one pruned per task during adaptation.

The paper's Seq2SPG model joins a shared and a private generator by a gate; here the same three modules sit on
any backbone (``learner.backbone``, the shared body):

    z     = body(x)                                              shared module (backbone)
    out   = g (.) head(z) + (1 - g) (.) private(z),  g = sigmoid(gate(z))       private module: an MLP on z

and the inner loop customises each task's private structure (section 3.3, "private network pruning"):

    step 1:  phi = theta - alpha g;  mask_t = the (1 - prune_rate) share of each private weight matrix whose
             first step |alpha g| is largest for task t (the connections the task moves least are cut)
             private phi <- phi (.) mask_t
    step k:  phi <- phi - alpha g (.) mask_t                    (pruned connections stay at zero)

The shared body, the shared head and the gate are adapted as in MAML and never pruned. The meta-gradient flows
through the masked steps (the masks are constants of it). The criterion, the first step's size, is this file's
reading of the paper's "prune the connections that change least in adaptation"; its dialogue task and persona
data are not available here (no text corpus ships with the installed packages), so it runs on the heterogeneous
task sets of :mod:`metalab.data.mixtures`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientOptions, build_network
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import UpdateRule


@dataclass
class CMAMLOptions(GradientOptions):
    #: hidden units of the private module (an MLP on the body's features).
    private_hidden: int = 64
    #: the share of each private weight matrix pruned per task after the first inner step (0: no pruning).
    prune_rate: float = 0.5


class CustomizedNetwork(nn.Module):
    """body -> gate-weighted sum of the shared head and the private MLP: [N, ...] -> [N, ways]."""

    def __init__(self, body: nn.Module, head: nn.Linear, hidden: int) -> None:
        super().__init__()
        self.body, self.head = body, head
        self.private = nn.Sequential(nn.Linear(head.in_features, hidden), nn.ReLU(),
                                     nn.Linear(hidden, head.out_features))
        self.gate = nn.Linear(head.in_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        z = self.body(x).flatten(1)
        g = torch.sigmoid(self.gate(z))
        return g * self.head(z) + (1 - g) * self.private(z)


@dataclass
class PrunedSGD(UpdateRule):
    """SGD whose first step fixes each task's mask of the ``pruned`` tensors (its state, [T, ...] per name);
    ``record``, when given, receives the masks (detached)."""

    lr: float
    pruned: tuple[str, ...]
    rate: float
    record: dict[str, Tensor] | None = None
    stateless = False

    def step(self, fast, grads, state, k, tensors):
        masks: dict[str, Tensor] = state if state is not None else {
            name: keep_largest(grads[name].detach().abs(), 1 - self.rate) for name in self.pruned if name in grads}
        if self.record is not None:
            self.record.update(masks)
        stepped = {**fast}
        for name, grad in grads.items():
            mask = masks.get(name)
            if mask is None:
                stepped[name] = fast[name] - self.lr * grad
            elif k == 0:
                stepped[name] = (fast[name] - self.lr * grad) * mask
            else:
                stepped[name] = fast[name] - self.lr * grad * mask
        return stepped, masks


def keep_largest(scores: Tensor, share: float) -> Tensor:
    """A 0/1 mask [T, ...] keeping, for each task t, the ``share`` of entries of ``scores[t]`` that are largest."""
    flat = scores.flatten(1)
    keep = max(1, round(share * flat.shape[1]))
    mask = torch.zeros_like(flat)
    return mask.scatter_(1, flat.topk(keep, dim=1).indices, 1.0).view_as(scores)  # exactly ``keep``, ties or not


@register("cmaml")
class CMAML(MAML):
    """MAML on a shared body + gate + a private module pruned per task (see the module docstring)."""

    options: CMAMLOptions

    def __init__(self, options: CMAMLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        if not 0 <= options.prune_rate < 1 or options.private_hidden < 1:
            raise ValueError(f"learner.prune_rate must be in [0, 1) and learner.private_hidden >= 1; got "
                             f"{options.prune_rate} and {options.private_hidden}")
        super().__init__(options, input_shape, speed)
        #: each task's private mask from the last adaptation ([T, ...] per pruned name, detached), for inspection
        self.masks: dict[str, Tensor] = {}

    def make_network(self, options: GradientOptions, input_shape: tuple[int, ...]) -> nn.Module:
        """:func:`build_network`'s shared body and head, with the private module between them."""
        assert isinstance(options, CMAMLOptions)
        plain = build_network(options, input_shape)
        assert isinstance(plain.body, nn.Module) and isinstance(plain.head, nn.Linear)
        return CustomizedNetwork(plain.body, plain.head, options.private_hidden)

    def pruned_names(self) -> tuple[str, ...]:
        """The private module's weight matrices (its biases and every shared tensor are never pruned)."""
        return tuple(name for name, p in self.network.named_parameters() if name.startswith("private.") and p.dim() > 1)

    def update_rule(self, training: bool) -> UpdateRule:
        self.masks.clear()
        return PrunedSGD(self.options.inner_lr, self.pruned_names(), self.options.prune_rate, record=self.masks)
