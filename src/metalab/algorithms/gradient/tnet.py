"""T-net (Lee & Choi 2018, "Gradient-Based Meta-Learning with Learned Layerwise Metric and Subspace").

MAML on a network whose every convolution and linear layer is followed by a meta-learned transformation T
(:mod:`metalab.nn.layer_transforms`, identity at the start). The inner loop adapts the layers' weights W but
not T, so a step on W, W <- W - alpha grad_W L, changes the layer's map T W by -alpha T grad_W L: T shapes the
inner steps (the paper's learned metric), and T is meta-learned with W through MAML's meta-step.
"""
from __future__ import annotations

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.nn.layer_transforms import add_transforms, is_transform


@register("tnet")
class TNet(MAML):
    """MAML with identity-initialised transformations T after the adapted layers; T is not adapted."""

    options: GradientOptions

    def __init__(self, options: GradientOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        #: the layers followed by a T (module names of ``self.network``), in order
        self.transformed_layers = add_transforms(self.network)
        self._adapted = [name for name, _ in self.network.named_parameters() if not is_transform(name)]

    def adapted_names(self) -> list[str]:
        return list(self._adapted)
