"""``hetero_train.py`` with the adapted network initialised as in the HSML authors' TensorFlow code (not a test).

    python benchmarks/noniid/hetero_train_tf_init.py RECIPE [RECIPE ...] --out FILE.json [-- key=value ...]

The authors' ``construct_fc_weights`` (``huaxiuyao/HSML``, ``maml.py``) draws every weight of the MLP from a normal
of standard deviation 0.01 truncated at two standard deviations and sets every bias to zero; metalab's MLP keeps
PyTorch's default initialisation. This script swaps in the authors' initialisation for the adapted network only
(the task encoder, clustering and gates keep theirs), then runs ``hetero_train.py`` with the same arguments.
"""
from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

import metalab.algorithms.gradient.base as base

default_network = base.build_network


def tf_initialised_network(options: base.GradientOptions, input_shape: tuple[int, ...]) -> nn.Sequential:
    network = default_network(options, input_shape)
    for module in network.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(module.bias)
    return network


if __name__ == "__main__":
    base.build_network = tf_initialised_network
    sys.path.insert(0, str(Path(__file__).parent))
    import hetero_train

    hetero_train.main()
