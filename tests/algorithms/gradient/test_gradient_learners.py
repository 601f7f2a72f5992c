"""The five gradient-based learners against closed forms: FOMAML = query gradient at the adapted
weights; Reptile after one SGD step; ANIL's body untouched by the inner loop; Meta-SGD's rates
learned; BatchNorm modes; training, evaluation and prediction through the CLI."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalab.algorithms.gradient.anil import ANIL, _Prefixed
from metalab.algorithms.gradient.fomaml import FirstOrderMAML
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.metasgd import MetaSGD
from metalab.algorithms.gradient.reptile import Reptile
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions

WAYS, SIZE = 3, 16


def make_tasks(count: int = 2, shots: int = 2, queries: int = 2, seed: int = 0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    return Task(
        torch.rand(count, WAYS * shots, 1, SIZE, SIZE, generator=generator, dtype=torch.float64),
        torch.arange(WAYS).repeat_interleave(shots).expand(count, -1),
        torch.rand(count, WAYS * queries, 1, SIZE, SIZE, generator=generator, dtype=torch.float64),
        torch.arange(WAYS).repeat_interleave(queries).expand(count, -1),
    )


def build(cls, speed: dict | None = None, **options):
    torch.manual_seed(0)
    return cls(cls.Options(name="x", ways=WAYS, hidden=8, **options), (1, SIZE, SIZE),
               SpeedOptions(**(speed or {}))).double()


def sgd_by_hand(network, params: dict, x, y, lr: float, steps: int) -> dict:
    """Plain SGD on one task with the unmodified module (batch statistics: train mode)."""
    params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(network, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {n: (p - lr * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
    return params


def test_first_order_maml_is_the_query_gradient_at_the_adapted_weights():
    learner, batch = build(FirstOrderMAML, inner_steps=3, inner_lr=0.2), make_tasks()
    learner.meta_step(batch)
    expected = None
    for t in range(len(batch)):
        adapted = sgd_by_hand(learner.network, dict(learner.network.named_parameters()),
                              batch.support_x[t], batch.support_y[t], 0.2, 3)
        loss = F.cross_entropy(functional_call(learner.network, adapted, (batch.query_x[t],)), batch.query_y[t])
        grads = torch.autograd.grad(loss / len(batch), list(adapted.values()))
        expected = grads if expected is None else [a + b for a, b in zip(expected, grads)]
    for p, g in zip(learner.network.parameters(), expected):
        assert torch.allclose(p.grad, g, atol=1e-12)


def test_reptile_update_is_the_closed_form_for_one_sgd_step():
    learner = build(Reptile, inner_steps=1, inner_lr=0.3, inner_optimizer="sgd")
    batch = make_tasks(count=3)
    learner.meta_step(batch)
    network = learner.network
    # one SGD step: phi_t = theta - lr * g_t, so theta - mean(phi_t) = lr * mean(g_t)
    grads = []
    for t in range(3):
        loss = F.cross_entropy(network(batch.support_x[t]), batch.support_y[t])
        grads.append(torch.autograd.grad(loss, list(network.parameters())))
    for i, p in enumerate(network.parameters()):
        expected = 0.3 * sum(g[i] for g in grads) / 3
        assert torch.allclose(p.grad, expected, atol=1e-12)


def test_reptile_adam_and_minibatches_run_and_move_toward_the_adapted_weights():
    learner = build(Reptile, inner_steps=4, inner_lr=0.01, inner_batch=3, inner_batch_test=0, inner_steps_test=2)
    batch = make_tasks(count=2, shots=3)
    metrics = learner.meta_step(batch)
    assert torch.isfinite(metrics["loss"]) and all(p.grad is not None for p in learner.parameters())
    assert learner.eval().predict(batch).shape == (2, 6, WAYS)


def test_anil_leaves_the_body_untouched_in_the_inner_loop():
    learner, batch = build(ANIL, inner_steps=2, inner_lr=0.5), make_tasks()
    fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=True)
    for name, p in learner.network.body.named_parameters():
        assert fast[f"body.{name}"] is p  # the meta-parameter itself: shared, no task dimension
    assert fast["head.weight"].shape == (2, WAYS, learner.network.head.in_features)
    # and the head adapts exactly as MAML restricted to the head would
    features = torch.stack([learner.network.body(batch.support_x[t]) for t in range(2)])
    head = learner.network.head
    for t in range(2):
        adapted = sgd_by_hand(head, dict(head.named_parameters()), features[t].detach(), batch.support_y[t], 0.5, 2)
        assert torch.allclose(fast["head.weight"][t], adapted["weight"], atol=1e-12)
    learner.meta_step(batch)
    for name, p in learner.network.named_parameters():
        assert p.grad is not None, name
        # a convolution's bias cancels in the batch norm that follows it: its gradient is zero exactly
        # when that pair runs folded (metalab/accel/conv_norm.py), and zero up to rounding otherwise.
        if not (name.startswith("body.blocks.") and name.endswith(".0.bias")):
            assert p.grad.abs().sum() > 0, name


def test_anil_body_record_updates_as_a_dict_does():
    """The record that files the body's BatchNorm statistics under the full network's names takes update()'s
    mapping positionally, as dict.update does: every keyword is a key, ``other`` included."""
    target: dict = {}
    record = _Prefixed(target, "body.")
    statistics = (torch.zeros(2), torch.ones(2))
    record.update({"blocks.0.1.": statistics}, other=statistics)
    record.update([("blocks.1.1.", statistics)])
    assert set(target) == {"body.blocks.0.1.", "body.other", "body.blocks.1.1."} and not record


def test_metasgd_rates_receive_gradients_and_match_maml_when_equal():
    batch = make_tasks()
    metasgd = build(MetaSGD, inner_steps=1, inner_lr=0.4)
    maml = build(MAML, inner_steps=1, inner_lr=0.4)
    for rate in metasgd.inner_lrs:  # exactly 0.4 in float64 (they were created in float32)
        rate.data.fill_(0.4)
    metasgd.meta_step(batch)
    maml.meta_step(batch)
    for a, b in zip(metasgd.network.parameters(), maml.network.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-12)
    for name, rate in zip(metasgd.adapted_names(), metasgd.inner_lrs):
        assert rate.grad is not None, name
        # a convolution bias feeding a batch norm has a zero inner gradient, so its rate has no effect
        if not (name.startswith("body.blocks.") and name.endswith(".0.bias")):
            assert rate.grad.abs().sum() > 0, name
    assert metasgd.inner_lrs[0].shape == metasgd.network.body.blocks[0][0].weight.shape
    per_tensor = build(MetaSGD, lr_per="tensor", lr_init_range=[0.005, 0.1])
    assert per_tensor.inner_lrs[0].shape == () and 0.005 <= per_tensor.inner_lrs[0].item() <= 0.1


def test_running_batchnorm_updates_estimates_and_predicts_each_query_alone():
    learner, batch = build(MAML, bn_mode="running", inner_steps=1), make_tasks()
    bn = learner.network.body.blocks[0][1]
    before = bn.running_mean.clone()
    learner.meta_step(batch)
    assert not torch.allclose(before, bn.running_mean) and int(bn.num_batches_tracked) == 1
    learner.eval()
    together = learner.predict(batch)
    alone = learner.predict(Task(batch.support_x, batch.support_y, batch.query_x[:, :1], batch.query_y[:, :1]))
    assert torch.allclose(together[:, :1], alone, atol=1e-12)  # no query statistics involved


def test_transductive_predictions_and_adapt_agree():
    learner, batch = build(MAML, inner_steps=2, inner_steps_test=3), make_tasks()
    learner.eval()
    batched = learner.predict(batch)
    single = learner.adapt(batch.support_x[1], batch.support_y[1])(batch.query_x[1])
    assert torch.allclose(batched[1], single, atol=1e-10)


def test_more_ways_than_head_outputs_is_a_clear_error():
    learner = build(MAML)
    batch = make_tasks()
    batch.support_y = batch.support_y.clone()
    batch.support_y[:, -1] = WAYS  # a fourth class
    with pytest.raises(ValueError, match="learner.ways"):
        learner.meta_step(batch)


@pytest.mark.filterwarnings("ignore:speed.precision=bf16 on a CPU without bf16 instructions")
def test_bf16_path_runs_and_stays_close_to_fp32():
    batch = make_tasks().to("cpu", torch.float32)
    fp32 = build(MAML).float()
    bf16 = build(MAML, {"precision": "bf16", "channels_last": True}).float()
    fp32.meta_step(batch)
    bf16.meta_step(batch)
    a = torch.cat([p.grad.flatten() for p in fp32.network.parameters()])
    b = torch.cat([p.grad.flatten() for p in bf16.network.parameters()])
    # bf16 keeps ~3 significant digits: the meta-gradient points the same way, not to the same digits.
    assert float(F.cosine_similarity(a, b, dim=0)) > 0.9


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_once(monkeypatch, native):
    from metalab.accel import precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    precision.warn_if_cpu_lacks_bf16.cache_clear()
    learner = build(MAML, {"precision": "bf16"}).float()
    batch = make_tasks().to("cpu", torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner.meta_step(batch)
        learner.meta_step(batch)
    precision.warn_if_cpu_lacks_bf16.cache_clear()
    messages = [str(w.message) for w in caught if "bf16 instructions" in str(w.message)]
    assert len(messages) == (0 if native else 1)
    if not native:
        assert "speed.precision=fp32" in messages[0]


def test_train_eval_predict_from_the_command_line(image_folders, tmp_path):
    from metalab.cli import main

    run = tmp_path / "run"
    common = ["data.dataset=folder", f"data.train_split={image_folders['train']}",
              f"data.val_split={image_folders['val']}", f"data.test_split={image_folders['test']}", "task.ways=3",
              "task.shots=1", "task.queries=2",
              "task.meta_batch=2", "eval.ways=3", "eval.shots=1", "eval.queries=2", "eval.episodes=4",
              "eval.val_episodes=2", "train.val_every=2", "train.steps=2", "run.tensorboard=false",
              "train.progress=false", "learner.ways=3", "learner.hidden=8", f"run.dir={run}"]
    assert main(["train", "omniglot-maml-5w1s", *common]) == 0
    assert json.loads((run / "results.json").read_text())["test"]["episodes"] == 4
    assert main(["eval", str(run), "--episodes", "3", "--json"]) == 0
    test_dir = image_folders["test"]
    # a trained run re-scored with other test-time options (same weights)
    from metalab.train.build import load_run

    saved, _, _ = load_run(run)
    changed, config, _ = load_run(run, overrides=["learner.inner_steps_test=7", "learner.inner_lr=0.05"])
    assert (config.learner.inner_steps_test, changed.options.inner_steps_test, changed.options.inner_lr) == (7, 7, 0.05)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, changed.state_dict()[name]), name
    with pytest.raises(ValueError, match="change the learner's weights"):
        load_run(run, overrides=["learner.hidden=16"])
    assert main(["eval", str(run), "--episodes", "3", "--json", "learner.inner_steps_test=7"]) == 0
    classes = sorted(p for p in test_dir.iterdir() if p.is_dir())[:3]
    support = tmp_path / "support"
    support.mkdir()
    for c in classes:
        (support / c.name).mkdir()
        first = sorted(c.iterdir())[0]
        (support / c.name / first.name).write_bytes(first.read_bytes())
    queries = [str(sorted(c.iterdir())[1]) for c in classes]
    assert main(["predict", str(run), "--support", str(support), "--query", *queries, "--json"]) == 0


def test_sinusoid_recipe_trains_and_plots(tmp_path):
    from metalab.cli import main
    from metalab.train.plots import plot_run

    run = tmp_path / "sinusoid"
    assert main(["train", "sinusoid-maml-5shot", "train.steps=3", "eval.episodes=5", "eval.val_episodes=2",
                 "train.val_every=3", "run.tensorboard=false", "train.progress=false", f"run.dir={run}"]) == 0
    result = json.loads((run / "results.json").read_text())["test"]
    assert result["metric"] == "mse" and result["episodes"] == 5
    path = plot_run(run, tasks=2)
    assert path.exists() and path.stat().st_size > 10_000


def test_reptile_takes_null_inner_steps_test_as_inner_steps_like_every_gradient_learner():
    from metalab.config import load_recipe
    from metalab.train.build import build_learner

    config = load_recipe("omniglot-reptile-5w1s", ["learner.inner_steps_test=null", "learner.hidden=4"])
    learner = build_learner(config, (1, 28, 28))
    assert learner.inner_steps(training=False) == config.learner.inner_steps == 5
    assert build_learner(load_recipe("omniglot-reptile-5w1s", ["learner.hidden=4"]), (1, 28, 28)).inner_steps(
        training=False) == 50  # the paper's test-time steps stay the recipe's default
