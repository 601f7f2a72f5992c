"""Optimizee families: batches of B problems, each a loss of a flat parameter vector theta [N].

A :class:`Problems` batch has ``initial()`` -> theta_0 [B, N] and ``loss(theta [B, N], step)`` -> [B] (the
step picks the minibatch), so one call scores all B problems and a sum's gradient is each problem's own. The
families of Andrychowicz et al. 2016 (section 3), on data that ships with the library's dependencies:

- ``quadratic``: f(theta) = ||W theta - y||^2, W [10, 10] and y [10] i.i.d. N(0, 1) (section 3.1);
- ``digits``: an MLP (one hidden layer of 20 sigmoid units) on minibatches of 128 of the 8x8 digits of
  ``sklearn.datasets.load_digits``, an MNIST-like problem (section 3.2); width and activation are options
  (the paper's generalisation tests);
- ``omniglot``: the same MLP on a 5-way Omniglot problem (20 images of each of 5 random classes, 14x14 px).

A problem is a pure function of (family options, seed, index): a batch is drawn from ``torch.Generator``
seeded with the seed, so held-out problems (another seed, the other half of the data) never meet training ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

FAMILIES = ("quadratic", "digits", "omniglot")
ACTIVATIONS = ("sigmoid", "relu", "tanh")


@dataclass
class ProblemOptions:
    """Which optimizee family, and its shape."""

    #: "quadratic", "digits" or "omniglot".
    family: str = "quadratic"
    #: quadratic: dimension of theta.
    dim: int = 10
    #: MLP: hidden units (the paper: 20).
    mlp_hidden: int = 20
    #: MLP: hidden activation, "sigmoid" (the paper's), "relu" or "tanh".
    activation: str = "sigmoid"
    #: MLP: examples per step's minibatch (the paper: 128); 0 = the whole data set each step.
    batch: int = 128

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"problem.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"problem.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.dim < 1 or self.mlp_hidden < 1 or self.batch < 0:
            raise ValueError(f"problem.dim and problem.mlp_hidden must be >= 1 and problem.batch >= 0 (0 = all "
                             f"examples), got dim={self.dim}, mlp_hidden={self.mlp_hidden}, batch={self.batch}")


class Problems(Protocol):
    """B optimizees: theta [B, N] -> losses [B]."""

    def initial(self) -> Tensor: ...

    def loss(self, theta: Tensor, step: int) -> Tensor: ...


@dataclass
class Quadratics:
    """f_b(theta) = ||W_b theta - y_b||^2 with W [B, D, D], y [B, D]; theta_0 [B, D]."""

    W: Tensor
    y: Tensor
    theta0: Tensor

    def initial(self) -> Tensor:
        return self.theta0.clone()

    def loss(self, theta: Tensor, step: int) -> Tensor:
        residual = torch.einsum("bij,bj->bi", self.W, theta) - self.y
        return (residual * residual).sum(-1)


@dataclass
class MLPProblems:
    """A one-hidden-layer MLP classifier per problem, on its own data [B, n, d] and labels [B, n], trained on the
    minibatch ``index[step]`` [B, m] at each step (cross-entropy)."""

    inputs: Tensor
    labels: Tensor
    index: Tensor
    theta0: Tensor
    hidden: int
    classes: int
    activation: str

    def initial(self) -> Tensor:
        return self.theta0.clone()

    def loss(self, theta: Tensor, step: int) -> Tensor:
        if step >= self.index.shape[0]:
            raise ValueError(f"these problems hold minibatches for {self.index.shape[0]} steps, step {step} asked: "
                             f"sample them with a longer horizon")
        rows = torch.arange(self.inputs.shape[0]).unsqueeze(1)
        x, y = self.inputs[rows, self.index[step]], self.labels[rows, self.index[step]]  # [B, m, d], [B, m]
        w1, b1, w2, b2 = unflatten_mlp(theta, x.shape[-1], self.hidden, self.classes)
        h = torch.baddbmm(b1.unsqueeze(1), x, w1)
        h = torch.sigmoid(h) if self.activation == "sigmoid" else torch.relu(h) if self.activation == "relu" \
            else torch.tanh(h)
        logits = torch.baddbmm(b2.unsqueeze(1), h, w2)  # [B, m, classes]
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def mlp_size(inputs: int, hidden: int, classes: int) -> int:
    return inputs * hidden + hidden + hidden * classes + classes


def unflatten_mlp(theta: Tensor, inputs: int, hidden: int, classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """theta [B, N] -> W1 [B, d, h], b1 [B, h], W2 [B, h, c], b2 [B, c]."""
    sizes = [inputs * hidden, hidden, hidden * classes, classes]
    w1, b1, w2, b2 = theta.split(sizes, dim=1)
    return w1.view(-1, inputs, hidden), b1, w2.view(-1, hidden, classes), b2


def mlp_initial(count: int, inputs: int, hidden: int, classes: int, generator: torch.Generator) -> Tensor:
    """theta_0 [B, N]: each layer uniform in +-1/sqrt(fan_in), as ``torch.nn.Linear`` initialises."""
    parts = []
    for fan_in, shape in ((inputs, inputs * hidden + hidden), (hidden, hidden * classes + classes)):
        bound = 1 / math.sqrt(fan_in)
        parts.append((torch.rand(count, shape, generator=generator) * 2 - 1) * bound)
    w1b1, w2b2 = parts
    return torch.cat([w1b1, w2b2], 1)  # W1, b1 then W2, b2: mlp_size's order (bounds per layer)


def minibatches(count: int, size: int, batch: int, steps: int, generator: torch.Generator) -> Tensor:
    """[steps, B, m] positions: each problem's passes over its own random orders of its ``size`` examples."""
    if batch == 0 or batch >= size:
        return torch.arange(size).expand(steps, count, size)
    per_pass = size // batch
    passes = -(-steps // per_pass)
    orders = torch.stack([torch.rand(count, size, generator=generator).argsort(1) for _ in range(passes)])
    chunks = orders[:, :, : per_pass * batch].unflatten(2, (per_pass, batch))  # [passes, B, per_pass, m]
    return chunks.permute(0, 2, 1, 3).flatten(0, 1)[:steps]


def digits_data(half: str) -> tuple[Tensor, Tensor]:
    """The 8x8 digits of scikit-learn scaled to [0, 1]: [n, 64], labels [n]; ``half`` "train" (the first half,
    training problems) or "test" (the second, held-out problems)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    middle = x.shape[0] // 2
    return (x[:middle], y[:middle]) if half == "train" else (x[middle:], y[middle:])


def sample_problems(options: ProblemOptions, count: int, seed: int, horizon: int, split: str = "train",
                    omniglot: tuple[Tensor, list[list[int]]] | None = None,
                    dtype: torch.dtype = torch.float32) -> Problems:
    """``count`` problems of the family, a pure function of (options, seed, split); MLP minibatches for
    ``horizon`` steps. ``omniglot``: (images [n, 1, H, W] uint8, items of each class) of the split to draw
    5-way problems from (Omniglot's training or test classes)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    generator = torch.Generator().manual_seed(seed)
    if options.family == "quadratic":
        d = options.dim
        W = torch.randn(count, d, d, generator=generator, dtype=dtype)
        y = torch.randn(count, d, generator=generator, dtype=dtype)
        return Quadratics(W, y, torch.randn(count, d, generator=generator, dtype=dtype))
    if options.family == "digits":
        x, labels = digits_data(split)
        inputs, targets, classes = x.expand(count, *x.shape), labels.expand(count, -1), 10
    else:
        if omniglot is None:
            raise ValueError("omniglot problems need the Omniglot images of the split (omniglot=(images, items))")
        images, items = omniglot
        ways, per_class = 5, min(len(members) for members in items)
        chosen = torch.stack([torch.randperm(len(items), generator=generator)[:ways] for _ in range(count)])
        picks = torch.tensor([[items[c][i] for c in row.tolist() for i in range(per_class)] for row in chosen])
        pixels = images[picks.flatten()].to(dtype) / 255.0
        inputs = F.avg_pool2d(pixels, 2).flatten(1).view(count, ways * per_class, -1)  # 28 -> 14 px
        targets = torch.arange(ways).repeat_interleave(per_class).expand(count, -1)
        classes = ways
    theta0 = mlp_initial(count, inputs.shape[-1], options.mlp_hidden, classes, generator).to(dtype)
    index = minibatches(count, inputs.shape[1], options.batch, horizon + 1, generator)
    return MLPProblems(inputs.to(dtype), targets, index, theta0, options.mlp_hidden, classes, options.activation)
