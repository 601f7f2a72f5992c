"""An RNN black-box optimizer (Chen et al. 2017, "Learning to learn without gradient descent by gradient
descent"): an LSTM proposes the next query point from the last (point, value) it saw, meta-trained on functions
drawn from a Gaussian-process prior.

    h_t, x_t = RNN(h_{t-1}, x_{t-1}, y_{t-1}; phi),      y_t = f(x_t)            (section 2, Figure 1)

At test time only the values y_t are used (a black box); in meta-training f is a differentiable sample of the
GP prior, so the loss back-propagates through y_t = f(x_t) into phi. The loss is the observed improvement
(section 2.1):

    L_OI(phi) = E_f [ sum_{t=2..T} min( f(x_t) - min_{i<t} f(x_i), 0 ) ]

(t = 1 has no earlier point and adds nothing). Functions are minimised over the unit cube [0, 1]^d. The GP
prior (RBF kernel, unit variance) is sampled by random Fourier features (Rahimi & Recht 2007): with
omega_m ~ N(0, I / l^2), b_m ~ U(0, 2 pi), w_m ~ N(0, 1), f(x) = sqrt(2 / M) sum_m w_m cos(omega_m . x + b_m)
has covariance -> exp(-||x - x'||^2 / (2 l^2)) as M grows: a smooth, differentiable, exactly reproducible sample.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class GPFunctions:
    """B functions of [0, 1]^d drawn from a GP prior with an RBF kernel (random Fourier features)."""

    omega: Tensor  # [B, M, d]
    phase: Tensor  # [B, M]
    weight: Tensor  # [B, M]

    @property
    def dim(self) -> int:
        return self.omega.shape[-1]

    def __len__(self) -> int:
        return self.omega.shape[0]

    def __call__(self, x: Tensor) -> Tensor:
        """x [B, ..., d] (one or more points per function) -> values [B, ...]."""
        flat = x.reshape(x.shape[0], -1, self.dim)
        features = torch.cos(torch.einsum("bnd,bmd->bnm", flat, self.omega) + self.phase.unsqueeze(1))
        values = math.sqrt(2.0 / self.omega.shape[1]) * (features * self.weight.unsqueeze(1)).sum(-1)
        return values.view(x.shape[:-1])

    def minimum(self, candidates: int = 4096, refine: int = 100, seed: int = 0) -> Tensor:
        """Each function's global minimum [B], estimated: the best of ``candidates`` uniform points, then
        ``refine`` Adam steps from the 16 best (clamped to the cube)."""
        generator = torch.Generator().manual_seed(seed)
        points = torch.rand(len(self), candidates, self.dim, generator=generator, dtype=self.omega.dtype)
        with torch.no_grad():
            values = self(points)
        best = values.topk(16, dim=1, largest=False).indices
        x = points.gather(1, best.unsqueeze(-1).expand(-1, -1, self.dim)).clone().requires_grad_()
        optimizer = torch.optim.Adam([x], lr=0.01)
        for _ in range(refine):
            optimizer.zero_grad()
            self(x).sum().backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        with torch.no_grad():
            return torch.minimum(self(x).min(1).values, values.min(1).values)


def sample_gp_functions(count: int, dim: int, seed: int, length_scale: float = 0.3, features: int = 256,
                        dtype: torch.dtype = torch.float32) -> GPFunctions:
    """``count`` functions of the GP prior on [0, 1]^dim, a pure function of the seed."""
    if dim < 1 or not length_scale > 0 or features < 1:
        raise ValueError(f"GP functions need dim >= 1, length_scale > 0 and features >= 1, got dim={dim}, "
                         f"length_scale={length_scale}, features={features}")
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(count, features, dim, generator=generator, dtype=dtype) / length_scale
    phase = 2 * math.pi * torch.rand(count, features, generator=generator, dtype=dtype)
    weight = torch.randn(count, features, generator=generator, dtype=dtype)
    return GPFunctions(omega, phase, weight)


class RNNSearch(nn.Module):
    """The proposal network: an LSTM over (x_{t-1}, y_{t-1}) whose output, squashed to [0, 1]^d, is x_t."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.lstm = nn.LSTM(dim + 1, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def forward(self, evaluate: Callable[[Tensor], Tensor], batch: int, steps: int,
                black_box: bool = False) -> tuple[Tensor, Tensor]:
        """Query ``steps`` points of B functions: (points [B, T, d], values [B, T]).

        ``evaluate`` maps points [B, d] to values [B] (a :class:`GPFunctions`, or any black box);
        ``black_box`` detaches the values from the graph (all a test-time search may use of them).
        """
        dtype = self.out.weight.dtype
        x = torch.zeros(batch, 1, self.dim, dtype=dtype)  # x_0, y_0: the first proposal's inputs
        y = torch.zeros(batch, 1, 1, dtype=dtype)
        state = None
        points, values = [], []
        for _ in range(steps):
            h, state = self.lstm(torch.cat([x, y], -1), state)
            x = torch.sigmoid(self.out(h))  # [B, 1, d]
            value = evaluate(x[:, 0])
            if black_box:
                value = value.detach()
            points.append(x[:, 0])
            values.append(value)
            y = value.view(batch, 1, 1)
        return torch.stack(points, 1), torch.stack(values, 1)


def observed_improvement_loss(values: Tensor) -> Tensor:
    """L_OI of values [B, T]: mean over functions of sum_{t>=2} min(y_t - min_{i<t} y_i, 0)."""
    best_before = torch.cummin(values, dim=1).values[:, :-1]
    return torch.clamp(values[:, 1:] - best_before, max=0).sum(1).mean()


def simple_regret(values: Tensor, minimum: Tensor) -> Tensor:
    """Best value found so far minus the global minimum: values [B, T], minimum [B] -> [B, T]."""
    return torch.cummin(values, dim=1).values - minimum.unsqueeze(1)


def random_search(f: GPFunctions, steps: int, seed: int) -> Tensor:
    """Values [B, T] of ``steps`` uniform queries of each function."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return f(torch.rand(len(f), steps, f.dim, generator=generator, dtype=f.omega.dtype))


def meta_train_search(dim: int, steps: int = 30, iterations: int = 500, batch: int = 64, lr: float = 1e-3,
                      seed: int = 0, hidden: int = 64, length_scale: float = 0.3) -> tuple[RNNSearch, list[float]]:
    """Meta-train an :class:`RNNSearch` on fresh GP functions each iteration (seeds 1_000 * seed + i): the
    network and the loss of every iteration."""
    torch.manual_seed(seed)
    net = RNNSearch(dim, hidden)
    adam = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for iteration in range(iterations):
        f = sample_gp_functions(batch, dim, seed=1_000_000 * (seed + 1) + iteration, length_scale=length_scale)
        _, values = net(f, batch, steps)
        loss = observed_improvement_loss(values)
        adam.zero_grad()
        loss.backward()
        adam.step()
        history.append(float(loss.detach()))
    return net, history
