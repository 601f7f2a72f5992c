"""Networks (backbones) and the functional core of the gradient-based learners: the reference forward of T tasks,
the inner loop with its extension points, implicit-differentiation tools, BatchNorm semantics, and the one
dispatch point to the speed backend (``execution.py``)."""
from metalab.nn.backbones import MLP, Conv4, build_backbone, embedding_dim
from metalab.nn.resnet12 import ResNet12

__all__ = ["Conv4", "MLP", "ResNet12", "build_backbone", "embedding_dim"]
