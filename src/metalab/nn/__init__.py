"""Networks (backbones) and the functional core used by the learners."""
from metalab.nn.backbones import Conv4, MLP, build_backbone, embedding_dim

__all__ = ["Conv4", "MLP", "build_backbone", "embedding_dim"]
