"""HSML (Yao et al. 2019, "Hierarchically Structured Meta-learning"): MAML from a cluster-gated initialisation.

For task i with support set {(x_j, y_j)}, section 3 of the paper:

    e_j   = encode(x_j) (+) y_j                         a support element (images: a small Conv-4 + one-hot label)
    g_i   = Aggregate(e_1..e_K)                         task representation (3.1): the recurrent autoencoder
            L_rec = ||e - Decode(g_i)||^2                 aggregator (a GRU, "gru") or its pooling variant ("mean")
    p^l_{j->k} = softmax_k( -||h^l_j - c^l_k||^2 / (2 sigma) )         soft assignment to level l's centres c^l_k
    h^{l+1}_k  = sum_j p^l_{j->k} tanh(W^l_k h^l_j + b^l_k)             hierarchical clustering (3.2), h^1 = g_i,
                                                                        up to a root of one cluster: h_i
    theta_0i   = theta_0 (.) sigmoid(W_g (g_i (+) h_i) + b_g)           knowledge adaptation (3.3), a gate of
                                                                        the size of each tensor of theta_0
    phi_i      = k steps of MAML's inner loop from theta_0i
    min  sum_i L_query(phi_i) + mu * L_rec                              the meta-objective

The paper's centres are at every level (as above); the authors' code uses centres at the first level and a
linear softmax above it. The image encoder's BatchNorm normalises each support set with its own statistics, so a
task's representation does not depend on which tasks share its meta-batch slice.

With one cluster per level every assignment is 1, and the learner is MAML started from theta_0 (.) gate_i: its
meta-gradient for theta_0 is gate_i (.) MAML's meta-gradient at theta_0 (.) gate_i, and MAML's own once the gate
is 1 (tests/algorithms/gradient/test_hsml.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Params

AGGREGATORS = ("gru", "mean")


@dataclass
class HSMLOptions(GradientOptions):
    #: the task representation's autoencoder aggregator: "gru" (recurrent, the paper's toy setting) or "mean"
    #: (pooling).
    aggregator: str = "gru"
    #: size of the task representation g_i and of every cluster representation h (the code's hidden_dim).
    task_dim: int = 40
    #: clusters per level of the hierarchy, bottom up; a root of one cluster is added on top (paper: [4, 2]).
    clusters: list[int] = field(default_factory=lambda: [4, 2])
    #: sigma of the soft assignment exp(-||h - c||^2 / (2 sigma)) (the code: 2 for regression, 10 for images).
    sigma: float = 2.0
    #: mu, the weight of the autoencoder's reconstruction loss in the meta-objective (the code's emb_loss_weight).
    reconstruction_weight: float = 0.01
    #: images: Conv-4 channels of the support-image encoder of the task representation.
    encoder_channels: int = 32


class Aggregator(nn.Module):
    """Task representation g [T, D] and reconstruction loss [T] from support elements e [T, K, E]."""

    def __init__(self, kind: str, element: int, dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.encoder: nn.Module
        self.decoder: nn.Module
        if kind == "gru":
            self.encoder, self.decoder = nn.GRU(element, dim, batch_first=True), nn.GRUCell(element, dim)
            self.readout = nn.Linear(dim, element)
        else:
            middle = max(dim, element) // 2 + 1
            self.encoder = nn.Sequential(nn.Linear(element, middle), nn.ReLU(), nn.Linear(middle, dim), nn.ReLU())
            self.decoder = nn.Sequential(nn.Linear(dim, middle), nn.ReLU(), nn.Linear(middle, element))
            self.pool = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())

    def forward(self, e: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "mean":
            codes = self.encoder(e)                                               # [T, K, D]
            loss = 0.5 * (e - self.decoder(codes)).pow(2).flatten(1).mean(1)
            return self.pool(codes.mean(1)), loss
        codes, state = self.encoder(e)                                            # [T, K, D], [1, T, D]
        hidden, element, decoded = state[0], torch.zeros_like(e[:, 0]), []
        for _ in range(e.shape[1]):  # decode the sequence backwards, each output fed back as the next input
            hidden = self.decoder(element, hidden)
            element = self.readout(hidden)
            decoded.append(element)
        reconstruction = torch.stack(decoded[::-1], 1)
        return codes.mean(1), (e - reconstruction).pow(2).flatten(1).mean(1)


@register("hsml")
class HSML(MAML):
    """MAML whose initialisation is gated per task by its soft cluster in a learned hierarchy (see the module)."""

    options: HSMLOptions

    def __init__(self, options: HSMLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.aggregator not in AGGREGATORS:
            raise ValueError(f"learner.aggregator must be one of {', '.join(AGGREGATORS)}, got {options.aggregator!r}")
        if not options.clusters or min(options.clusters) < 1:
            raise ValueError(f"learner.clusters must list >= 1 clusters per level, got {list(options.clusters)}")
        if not options.sigma > 0 or options.task_dim < 1 or not options.reconstruction_weight >= 0:
            raise ValueError(f"learner.sigma must be > 0, learner.task_dim >= 1 and learner.reconstruction_weight "
                             f">= 0; got {options.sigma}, {options.task_dim}, {options.reconstruction_weight}")
        dim = options.task_dim
        if options.kind == "classification":
            self.image_encoder = build_backbone("conv4", input_shape, options.encoder_channels)
            for module in self.image_encoder.modules():  # each task's own statistics, in training and at test
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.track_running_stats, module.running_mean, module.running_var = False, None, None
            element = embedding_dim(self.image_encoder, input_shape) + options.ways
        else:
            self.element = nn.Linear(int(torch.Size(input_shape).numel()) + options.ways, 20)  # the code's first dense
            element = 20
        self.aggregator = Aggregator(options.aggregator, element, dim)
        levels = [*options.clusters, 1]
        self.centres = nn.ParameterList(nn.Parameter(torch.randn(k, dim)) for k in levels)
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(k, dim, dim) / dim**0.5) for k in levels)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(k, dim)) for k in levels)
        self.gates = nn.ModuleDict({name.replace(".", "_"): nn.Linear(2 * dim, value.numel())
                                    for name, value in self.network.named_parameters()})

    def task_representation(self, support_x: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """g [T, D] and each task's reconstruction loss [T] from its support set ([T, S, ...], [T, S(, D)])."""
        if self.task_kind == "classification":
            # task by task: BatchNorm statistics of one support set, whichever tasks share a slice
            features = torch.stack([self.image_encoder(x).flatten(1) for x in support_x])
            e = torch.cat([features, F.one_hot(support_y, self.options.ways).to(features.dtype)], -1)
        else:
            e = self.element(torch.cat([support_x.flatten(2), support_y.flatten(2)], -1))
        return self.aggregator(e)

    def assignments(self, h: Tensor, level: int) -> Tensor:
        """p^l_{j->k} [T, N, K]: each node j of level l (h [T, N, D]) softly assigned to the centres c^l_k."""
        distances = (h.unsqueeze(2) - self.centres[level]).pow(2).sum(-1)
        return torch.softmax(-distances / (2 * self.options.sigma), -1)

    def cluster_representation(self, g: Tensor) -> Tensor:
        """h_i [T, D]: g_i carried up the hierarchy, h^{l+1}_k = sum_j p_{j->k} tanh(W_k h_j + b_k)."""
        h = g.unsqueeze(1)                                                        # level 1: one node, [T, 1, D]
        for level in range(len(self.centres)):
            p = self.assignments(h, level)                                        # [T, N, K]
            transformed = torch.tanh(torch.einsum("tnd,ked->tnke", h, self.weights[level]) + self.biases[level])
            h = torch.einsum("tnk,tnke->tke", p, transformed)                     # [T, K, D]
        return h[:, 0]                                                            # the root

    def task_start(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        """theta_0i = theta_0 (.) sigmoid(W_g (g_i (+) h_i) + b_g) for each adapted tensor, [T, ...]."""
        g, _ = self.task_representation(support_x, support_y)
        both = torch.cat([g, self.cluster_representation(g)], -1)
        theta = self.parameters_by_name()
        return {name: theta[name] * torch.sigmoid(self.gates[name.replace(".", "_")](both)).view(-1, *theta[name].shape)
                for name in self.adapted_names()}

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """MAML's meta-gradient from the gated starts, plus mu * grad of the mean reconstruction loss."""
        metrics = super().meta_step(batch)
        # the reconstruction term's gradient adds to the query loss's: computed on its own forward pass, it needs
        # no hook in MAML's backward (the autoencoder is cheap next to the inner loop)
        _, reconstruction = self.task_representation(batch.support_x, batch.support_y)
        (self.options.reconstruction_weight * reconstruction.mean()).backward()
        return {**metrics, "reconstruction": reconstruction.detach().mean()}
