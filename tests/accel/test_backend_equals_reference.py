"""The speed backend computes what the reference path computes: for every gradient learner, every backbone and
every BatchNorm mode, the meta-gradient, the metrics, the running estimates and the predictions of
``speed.engine: accel`` (with every device forced on, whatever the sizes) equal those of ``speed.engine:
reference`` (plain PyTorch, task by task with torch.func) in float64. The reference is the specification."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import metalab.nn.backbones as backbones
from metalab.accel import batch_norm_relu_pool, folded, pooling
from metalab.algorithms.registry import learner_class
from metalab.data.task import Task
from metalab.nn import reference
from metalab.nn.backbones import MLP, Conv4
from metalab.nn.execution import Execution, SpeedOptions
from metalab.nn.resnet12 import ResNet12

LEARNERS = ["maml", "fomaml", "metasgd", "anil", "reptile", "llama", "metalstm", "hsml", "task-mixture", "cmaml",
            "metacurvature", "tnet", "mtnet", "imaml", "warpgrad", "platipus", "bmaml", "abml"]
#: learners that run the whole meta-batch at once (no task slices), with T * S sampled networks per forward
UNSLICED = ("platipus", "bmaml", "abml")
BACKBONES = ["conv4", "resnet12", "mlp"]
TASKS, WAYS, SHOTS, QUERIES = 3, 3, 2, 2
#: accel configurations: the defaults, and the other side of every switch
ACCEL = {
    "defaults": {},
    "folded-checkpointed-nchw": {"task_chunk": 0, "query_chunk": 2, "checkpoint": True, "checkpoint_inner_loop": True,
                                 "channels_last": False, "inner_channels_last": None},
    "task-by-task-unfused": {"task_chunk": 1, "query_chunk": 3, "fold_conv_norm": False, "native_kernels": False},
}
#: learner options per algorithm (small and quick; Reptile with its inner Adam and minibatches)
OPTIONS = {
    "maml": dict(inner_steps=2, inner_lr=0.3),
    "fomaml": dict(inner_steps=2, inner_lr=0.3),
    "metasgd": dict(inner_steps=2, inner_lr=0.3, lr_init_range=[0.1, 0.4]),
    "anil": dict(inner_steps=3, inner_lr=0.5),
    "reptile": dict(inner_steps=3, inner_lr=0.01, inner_batch=4, inner_batch_test=3, inner_steps_test=2),
    "llama": dict(inner_steps=2, inner_lr=0.3, laplace_layers="all", prior_precision=0.5),
    "metalstm": dict(inner_steps=2, lstm_hidden=3, input_bias_init=[-1.0, -1.0]),
    "hsml": dict(inner_steps=2, inner_lr=0.3, task_dim=6, encoder_channels=4, clusters=[3, 2]),
    "task-mixture": dict(inner_steps=2, inner_lr=0.3, max_components=3, spawn_steps=2, spawn_lr=0.3),
    "cmaml": dict(inner_steps=2, inner_lr=0.3, private_hidden=6, prune_rate=0.5),
    "metacurvature": dict(inner_steps=2, inner_lr=0.3),
    "tnet": dict(inner_steps=2, inner_lr=0.3),
    "mtnet": dict(inner_steps=2, inner_lr=0.3, mask_logit_init=0.5),
    "imaml": dict(inner_steps=3, inner_lr=0.3, prox_lambda=2.0, cg_steps=3),
    "warpgrad": dict(inner_steps=3, inner_lr=0.3, inner_batch=4, inner_batch_test=3),
    "platipus": dict(inner_steps=2, inner_lr=0.3, train_samples=2, samples=2, std_init=0.1, gamma_init=0.1),
    "bmaml": dict(inner_steps=2, inner_lr=0.05, particles=2, leader_steps=1),
    "abml": dict(inner_steps=2, inner_lr=0.05, train_samples=2, samples=2, prior_std_init=0.1),
}


@pytest.fixture(autouse=True)
def _every_device_on(monkeypatch):
    """Sliced first blocks, index-only pooling and the compiled BatchNorm + ReLU + max-pool on every size."""
    monkeypatch.setattr(folded, "SLICE_BYTES", 1)
    monkeypatch.setattr(pooling, "MIN_BYTES", 0)
    monkeypatch.setattr(batch_norm_relu_pool, "MIN_BYTES", 0)
    monkeypatch.setattr(backbones, "RESNET12_CHANNELS", (4, 4, 6, 8))


def make_batch(backbone: str, seed: int) -> tuple[Task, tuple[int, ...]]:
    generator = torch.Generator().manual_seed(seed)
    if backbone == "mlp":  # regression tasks on vectors
        shape = (1,)
        x = torch.rand(TASKS, 2 * SHOTS + 2 * QUERIES, 1, generator=generator, dtype=torch.float64) * 6 - 3
        y = torch.sin(x * (1 + torch.arange(TASKS, dtype=torch.float64).view(-1, 1, 1)))
        return Task(x[:, :2 * SHOTS], y[:, :2 * SHOTS], x[:, 2 * SHOTS:], y[:, 2 * SHOTS:]), shape
    shape = (3, 16, 16) if backbone == "resnet12" else (1, 16, 16)
    support_x = torch.rand(TASKS, WAYS * SHOTS, *shape, generator=generator, dtype=torch.float64)
    query_x = torch.rand(TASKS, WAYS * QUERIES, *shape, generator=generator, dtype=torch.float64)
    support_y = torch.arange(WAYS).repeat_interleave(SHOTS).expand(TASKS, -1)
    query_y = torch.arange(WAYS).repeat_interleave(QUERIES).expand(TASKS, -1)
    return Task(support_x, support_y, query_x, query_y), shape


def build(name: str, backbone: str, bn_mode: str, shape: tuple[int, ...], speed: dict):
    cls = learner_class(name)
    kind = {"kind": "regression", "ways": 1, "mlp_hidden": [8, 8]} if backbone == "mlp" else {"ways": WAYS, "hidden": 4}
    torch.manual_seed(0)
    options = cls.Options(name=name, backbone=backbone, bn_mode=bn_mode, **kind, **OPTIONS[name])
    return cls(options, shape, SpeedOptions(**speed)).double()


def run(learner, batch: Task, test: Task) -> dict[str, torch.Tensor]:
    """What a meta-training step and an evaluation produce: gradients, metrics, buffers, predictions."""
    torch.manual_seed(1)  # Reptile's minibatches
    metrics = learner.meta_step(batch)
    results = {f"grad {name}": p.grad.clone() for name, p in learner.named_parameters() if p.grad is not None}
    results.update({f"metric {key}": value for key, value in metrics.items()})
    results.update({f"buffer {name}": b.clone() for name, b in learner.named_buffers()})
    learner.eval()
    torch.manual_seed(2)
    results["predictions"] = learner.predict(test)
    return results


def cancelled_by_batch_norm(name: str) -> bool:
    """A convolution bias followed by BatchNorm: its gradient is zero, exactly or up to rounding depending on the
    kernels, and Reptile's Adam turns that rounding into +-lr steps. Their effect on every output is nil; only
    the BatchNorm's running mean, which the bias shifts, sees them."""
    name = name.replace("-", ".")
    return any(name.endswith(f"blocks.{block}.{suffix}")
               for block in range(4) for suffix in ("0.bias", "1.running_mean"))


@pytest.mark.parametrize("bn_mode", ["transductive", "running"])
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_backbone_and_batch_norm_mode(name, backbone, bn_mode):
    if backbone == "mlp" and bn_mode == "running":
        pytest.skip("the MLP has no BatchNorm: the two modes are one")
    if name == "warpgrad" and backbone == "resnet12":
        pytest.skip("WarpGrad interleaves warp layers with Conv-4 blocks or MLP layers (the paper's models)")
    if name in UNSLICED and backbone == "resnet12":
        pytest.skip("ResNet-12 runs on the reference path under both engines, and these learners run the meta-batch "
                    "at once: the two runs are the same computation")
    (batch, shape), (test, _) = make_batch(backbone, 0), make_batch(backbone, 1)
    expected = run(build(name, backbone, bn_mode, shape, {"engine": "reference"}), batch, test)
    assert max(float(v.abs().max()) for k, v in expected.items() if k.startswith("grad")) > 1e-3
    configurations = ACCEL if name == "maml" or backbone == "conv4" else {"defaults": {}}
    if name == "llama":  # LLAMA refuses the checkpointed unroll (its curvature differentiates the adapted weights)
        configurations = {label: {**speed, "checkpoint_inner_loop": False} for label, speed in configurations.items()}
    if name == "cmaml":  # its masks are a state carried across inner steps: no step-by-step recomputation
        configurations = {label: speed for label, speed in configurations.items()
                          if not speed.get("checkpoint_inner_loop")}
    for label, speed in configurations.items():
        assert_same_results(run(build(name, backbone, bn_mode, shape, speed), batch, test), expected, label, name)


def assert_same_results(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], label: str,
                        name: str) -> None:
    assert ours.keys() == expected.keys(), label
    for key, value in expected.items():
        if name == "reptile" and cancelled_by_batch_norm(key):
            continue
        error = float((ours[key].double() - value.double()).abs().max())
        assert error <= 1e-10, f"{label}: {key} differs from the reference by {error:.3g}"


def test_per_step_batch_norm_forwards_fall_back_to_the_reference(backbone="conv4"):
    """MAML++'s per-step BatchNorm has no folded rule: the execution runs its forwards on the reference path,
    while the task slices, the two-stage meta-backward and the checkpointed unroll still apply."""
    (batch, shape), (test, _) = make_batch(backbone, 0), make_batch(backbone, 1)
    expected = run(build("maml", backbone, "per_step", shape, {"engine": "reference"}), batch, test)
    assert not folded.supports(build("maml", backbone, "per_step", shape, {}).network)
    for label, speed in ACCEL.items():
        assert_same_results(run(build("maml", backbone, "per_step", shape, speed), batch, test), expected, label,
                            "maml")


@pytest.mark.filterwarnings("ignore:speed.precision=bf16")
def test_float32_kernels_agree_with_the_reference_to_float32_rounding():
    """The compiled kernels and NNPACK (float32 only) in one MAML meta-step: the reference's meta-gradient within
    float32 rounding (the relative error of a sum of many float32 products)."""
    torch.set_default_dtype(torch.float32)
    batch, shape = make_batch("conv4", 0)
    batch = batch.to("cpu", torch.float32)
    gradients = []
    for speed in ({"engine": "reference"}, {"winograd": True}, {}):
        learner = build("maml", "conv4", "transductive", shape, speed).float()
        learner.meta_step(batch)
        gradients.append(torch.cat([p.grad.flatten() for p in learner.parameters()]))
    for ours in gradients[1:]:
        assert float((ours - gradients[0]).norm() / gradients[0].norm()) < 1e-4


def test_the_backend_recognises_layers_never_networks():
    """Plain Sequentials of layers with a folded rule qualify, whatever their class name; a custom forward,
    a residual block or an unknown layer sends the network to the reference path."""
    class Renamed(nn.Sequential):  # a Sequential of known layers under another name: foldable
        pass

    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    class Conv4WithItsOwnForward(Conv4):
        def forward(self, x):
            return super().forward(x) * 2

    assert folded.supports(Conv4(1, 4)) and folded.supports(MLP(3, [4])) and folded.supports(Renamed(nn.Linear(2, 2)))
    assert not folded.supports(ResNet12(3, channels=(2, 2, 2, 2)))
    assert not folded.supports(nn.Sequential(nn.Linear(3, 3), Scale()))
    assert not folded.supports(Conv4WithItsOwnForward(1, 4))
    assert not folded.supports(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))


def test_a_network_the_backend_cannot_fold_runs_on_the_reference_path():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            return x + torch.tanh(self.linear(x))

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), Residual(), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    names = [n for n, _ in module.named_parameters()]
    params = {n: p.detach() + 0.1 * torch.randn(2, *p.shape, dtype=torch.float64) for n, p in module.named_parameters()}
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    ours = Execution(SpeedOptions()).forward(module, params, x, names)
    assert torch.allclose(ours, reference.task_forward(module, params, x, names), atol=1e-12)
