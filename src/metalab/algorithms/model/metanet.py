"""Meta Networks (Munkhdalai & Yu 2017): fast weights generated from loss gradients.

A base learner b and a dynamic representation network u each end in an *augmented* layer whose
output is ReLU(slow W x) + ReLU(fast W* x). Per task:

1. task-level meta information: the gradients of a representation loss L_emb(u(x_i), y_i) with
   respect to u's slow augmented weights, for the support examples; d maps them to u's task-level
   fast weights Q* (coordinate-wise network, averaged over examples);
2. example-level meta information: the gradients of the task loss of b(x_i) with respect to b's slow
   augmented weights, one per support example; m maps each to fast weights W*_i, stored in a memory
   keyed by u(x_i; Q*);
3. a query x reads the memory by attention over keys (softmax of cosine similarity with u(x; Q*))
   and is classified by b with its fast weights sum_i a_i W*_i.

Slow weights (both networks, m, d) are meta-trained by backprop through all of it. Gradients are
the standard preprocessed ones of Andrychowicz et al. 2016 (log-magnitude and sign).

Choices where the paper leaves room, named in the options: the base learner's output layer is
augmented without the ReLU (slow + fast logits; a ReLU would clip negative logits); d averages
its per-example outputs instead of reading them with an LSTM (order-invariant); the attention
has a learned sharpness initialised to 1 (the paper's plain softmax of cosines at init); m and d
also see the raw gradient next to the preprocessed one, and their output layers start at zero.
Without the last two, a first version stayed at chance on Omniglot 5-way 1-shot for 250 steps:
with sign-like preprocessed inputs only, m could not express a gradient step, and random
initial fast weights swamped the slow weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metalab.algorithms.model.base import EncoderOptions, EpisodicClassifier, build_encoder, embed_batch
from metalab.algorithms.registry import register
from metalab.nn.backbones import MLP
from metalab.nn.execution import SpeedOptions


@dataclass
class MetaNetOptions(EncoderOptions):
    #: width of the base learner's augmented hidden layer
    base_hidden: int = 64
    #: size of u's representations (the memory keys)
    key_size: int = 64
    #: hidden width of the coordinate-wise fast-weight generators m and d
    generator_hidden: int = 20
    #: size of the base learner's output layer
    max_ways: int = 5
    #: treat gradients as constant inputs (no second-order terms)
    first_order: bool = False
    #: gradient preprocessing constant p of Andrychowicz et al.
    preprocess_p: float = 10.0


def preprocess_gradient(gradient: Tensor, p: float) -> Tensor:
    """[...] -> [..., 2]: (log|g| / p, sign g) if |g| >= e^-p, else (-1, e^p g)."""
    magnitude = gradient.abs()
    large = magnitude >= math.exp(-p)
    first = torch.where(large, magnitude.clamp_min(math.exp(-p)).log() / p, -torch.ones_like(gradient))
    second = torch.where(large, gradient.sign(), math.exp(p) * gradient)
    return torch.stack([first, second], dim=-1)


class CoordinateGenerator(nn.Module):
    """Fast weights from gradients, one coordinate at a time: gradient [...] -> fast weight [...].

    Inputs per coordinate: the preprocessed gradient (log-magnitude, sign) and the raw gradient, so
    that a plain scaled gradient step (fast weight = -eta * g) is one linear unit away. The last
    layer starts at zero: at initialisation the fast weights are zero and b runs on its slow weights.
    """

    def __init__(self, hidden: int, p: float) -> None:
        super().__init__()
        self.p = p
        self.net = MLP(3, [hidden], 1)
        output = cast(nn.Linear, self.net.net[-1])  # the MLP's output layer (nn.Sequential's items are typed Module)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)

    def forward(self, gradient: Tensor) -> Tensor:
        features = torch.cat([preprocess_gradient(gradient, self.p), gradient.unsqueeze(-1)], dim=-1)
        return self.net(features).squeeze(-1)


class AugmentedLinear(nn.Module):
    """Layer augmentation: x [..., in] with fast weights [..., out, in] -> act(W x + b) + act(W* x)."""

    def __init__(self, in_features: int, out_features: int, relu: bool = True) -> None:
        super().__init__()
        self.slow = nn.Linear(in_features, out_features)
        self.relu = relu

    def forward(self, x: Tensor, fast: Tensor | None) -> Tensor:
        act = F.relu if self.relu else (lambda v: v)
        slow = act(self.slow(x))
        if fast is None:
            return slow
        return slow + act((fast @ x.unsqueeze(-1)).squeeze(-1))


class BaseLearner(nn.Module):
    """b: embedding [..., D] -> augmented hidden layer -> augmented output layer -> logits [..., max_ways]."""

    def __init__(self, features: int, hidden: int, ways: int) -> None:
        super().__init__()
        self.hidden = AugmentedLinear(features, hidden)
        self.output = AugmentedLinear(hidden, ways, relu=False)

    def forward(self, x: Tensor, fast: dict[str, Tensor] | None = None) -> Tensor:
        fast = fast or {}
        return self.output(self.hidden(x, fast.get("hidden.slow.weight")), fast.get("output.slow.weight"))


class RepresentationNetwork(nn.Module):
    """u: embedding [..., D] -> augmented layer -> representation [..., key_size]; readout for L_emb."""

    def __init__(self, features: int, key_size: int, ways: int) -> None:
        super().__init__()
        self.layer = AugmentedLinear(features, key_size)
        self.readout = nn.Linear(key_size, ways)

    def forward(self, x: Tensor, fast: dict[str, Tensor] | None = None) -> Tensor:
        return self.layer(x, (fast or {}).get("layer.slow.weight"))


def per_example_gradients(module: nn.Module, names: list[str], loss_fn, inputs: Tensor, labels: Tensor,
                          first_order: bool) -> dict[str, Tensor]:
    """Gradients of loss_fn(module(x_i), y_i) w.r.t. ``names`` for every example:
    inputs [N, ...] -> {name: [N, *shape]}."""
    params: dict[str, Tensor] = {name: p for name, p in module.named_parameters() if name in names}

    def example_loss(weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(module, weights, (x.unsqueeze(0),)), y.unsqueeze(0))

    if first_order:
        params, inputs = {k: v.detach() for k, v in params.items()}, inputs.detach()
    return vmap(grad(example_loss), in_dims=(None, 0, 0))(params, inputs, labels)


@register("metanet")
class MetaNet(EpisodicClassifier):
    options: MetaNetOptions

    def __init__(self, options: MetaNetOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.base_encoder, features = build_encoder(options.encoder, input_shape, options.hidden)
        self.representation_encoder, _ = build_encoder(options.encoder, input_shape, options.hidden)
        self.base = BaseLearner(features, options.base_hidden, options.max_ways)
        self.u = RepresentationNetwork(features, options.key_size, options.max_ways)
        self.m = CoordinateGenerator(options.generator_hidden, options.preprocess_p)  # example-level, for b
        self.d = CoordinateGenerator(options.generator_hidden, options.preprocess_p)  # task-level, for u
        self.log_sharpness = nn.Parameter(torch.zeros(()))

    def task_fast_weights(self, support_u: Tensor, labels: Tensor, ways: int) -> dict[str, Tensor]:
        """Q* from representation-loss gradients: support_u [T, S, D], labels [T, S] -> {name: [T, out, in]}."""
        tasks, size = labels.shape

        def representation_loss(representation: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(self.u.readout(representation)[..., :ways], y)

        gradients = per_example_gradients(self.u, ["layer.slow.weight"], representation_loss, support_u.flatten(0, 1),
                                          labels.flatten(), self.options.first_order)
        return {name: self.d(g).view(tasks, size, *g.shape[1:]).mean(1) for name, g in gradients.items()}

    def example_fast_weights(self, support_b: Tensor, labels: Tensor, ways: int) -> dict[str, Tensor]:
        """W*_i from task-loss gradients: support_b [T, S, D], labels [T, S] -> {name: [T, S, out, in]}."""
        tasks, size = labels.shape

        def task_loss(logits: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(logits[..., :ways], y)

        gradients = per_example_gradients(self.base, ["hidden.slow.weight", "output.slow.weight"], task_loss,
                                          support_b.flatten(0, 1), labels.flatten(), self.options.first_order)
        return {name: self.m(g).view(tasks, size, *g.shape[1:]) for name, g in gradients.items()}

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        support_b, query_b = embed_batch(self.base_encoder, support_x, query_x)
        support_u, query_u = embed_batch(self.representation_encoder, support_x, query_x)
        task_fast = self.task_fast_weights(support_u, support_y, ways)
        keys = self.u(support_u, {k: v.unsqueeze(1) for k, v in task_fast.items()})  # [T, S, K]
        lookups = self.u(query_u, {k: v.unsqueeze(1) for k, v in task_fast.items()})  # [T, Q, K]
        similarity = F.normalize(lookups, dim=-1) @ F.normalize(keys, dim=-1).transpose(1, 2)  # [T, Q, S]
        attention = (self.log_sharpness.exp() * similarity).softmax(dim=-1)
        memory = self.example_fast_weights(support_b, support_y, ways)
        query_fast = {name: torch.einsum("tqs,ts...->tq...", attention, value) for name, value in memory.items()}
        return self.base(query_b, query_fast)[..., :ways]
