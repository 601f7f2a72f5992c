"""What the gradient-based learners share: options, the network (body + head), adaptation, prediction.

Every learner here adapts through the one inner loop of :mod:`metalab.nn.functional`; the
algorithm files only say which parameters adapt, with which learning rates, and how the
meta-gradient is formed.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import Tensor, nn

from metalab.algorithms.base import LearnerOptions, MetaLearner, classification_metrics
from metalab.data.task import Task
from metalab.nn.backbones import MLP, Conv4, embedding_dim
from metalab.nn.functional import (
    BN_MODES,
    PRECISIONS,
    InnerLoop,
    backward_through_adaptation,
    classification_losses,
    inner_loop,
    merge_records,
    regression_losses,
    task_forward,
    update_running_statistics,
)


@dataclass
class GradientOptions(LearnerOptions):
    #: "classification" (Conv-4 body, linear head over ``ways`` classes) or "regression" (MLP body, linear head).
    kind: str = "classification"
    backbone: str = "conv4"
    #: Conv-4 channels.
    hidden: int = 64
    #: MLP hidden sizes (regression).
    mlp_hidden: List[int] = field(default_factory=lambda: [40, 40])
    #: output units of the head: classes per task (classification) or target size (regression).
    ways: int = 5
    inner_steps: int = 1
    #: inner steps at evaluation and prediction (None = ``inner_steps``).
    inner_steps_test: Optional[int] = None
    inner_lr: float = 0.4
    #: the largest L2 norm of one task's inner gradient (over its adapted parameters); a longer one is scaled down
    #: to it before the step (before Adam's moments with Reptile's inner Adam), so a plain SGD step is at most
    #: inner_lr * inner_grad_clip long. 0 (default) = no limit. The sinusoid recipes of Reptile (without it one
    #: task's 5 inner steps diverged at meta-iteration 7078) and ANIL (10 test steps) set it: RESULTS.md of
    #: benchmarks/gradient.
    inner_grad_clip: float = 0.0
    first_order: bool = False
    #: "transductive" (batch statistics of the current set, as in the MAML paper) or "running".
    bn_mode: str = "transductive"
    #: recompute the query forward's block activations in its backward (less memory, same result).
    checkpoint: bool = False
    #: second order: keep only each inner step's parameters and recompute one step's graph at a time in the
    #: meta-backward (memory of one step's graph instead of all ``inner_steps``; one more support forward+backward
    #: per step but the last; same meta-gradient). metalab/nn/checkpointed_unroll.py.
    checkpoint_inner_loop: bool = False
    #: tasks per inner-loop computation (1 = task by task: least memory; 0 = the whole meta-batch folded
    #: into grouped kernels; null (default) = :func:`auto_task_chunk`: on CPUs, slices of small support sets,
    #: smaller the more second-order steps they hold; task by task for large support sets and on GPUs).
    task_chunk: Optional[int] = None
    #: tasks per query forward+backward (1 = each task's queries alone: ordinary kernels, least memory).
    query_chunk: int = 1
    #: channels-last memory format for the convolutions (faster pooling and batch norm on CPU).
    channels_last: bool = True
    #: layout of the inner loop's passes when it differs from the query pass's (None = ``channels_last``).
    #: Default: NCHW. The support sets are small, and converting their activations costs more than
    #: channels-last saves (5-way so1 meta-iteration 11 % faster, 20-way 10 %; benchmarks/speed).
    inner_channels_last: Optional[bool] = False
    #: "fp32" (default) or "bf16" (autocast of the forward passes).
    precision: str = "fp32"
    #: compute the first convolution + BatchNorm (thin input: C_in * 3 * 3 <= 32 values per output) as one
    #: matmul with batch-normalised weights (metalab/nn/conv_norm.py); same function, faster.
    fold_conv_norm: bool = True
    #: metalab's compiled CPU kernels (built on first use; the PyTorch path where they cannot be built): that
    #: folded layer with its ReLU + 2x2 max-pool (metalab/nn/patch_conv_pool.py), and BatchNorm + ReLU +
    #: max-pool in the query pass and the inner loop, second order included (metalab/nn/batch_norm_relu_pool.py).
    native_kernels: bool = True
    #: 3x3 convolutions of the query pass (and of first-order inner loops) on 12x12-14x14 maps of 16+ images by
    #: NNPACK's fast-transform kernels, forward and both gradients (metalab/nn/nnpack_conv.py): fewer
    #: multiplications than oneDNN's direct convolution; results differ from it by float32 rounding only.
    #: false = oneDNN. null (default): NNPACK on AVX2 CPUs for batches of 150+ images (20-way query sets), where its
    #: ~30 MB of workspaces are small beside the rest; on an AVX2 CPU (AMD EPYC, Zen 3) it made a 5-way MAML
    #: meta-iteration 0.89-0.94x as long for 30-33 MB more memory, a 20-way one with 5 inner steps 0.75-0.94x
    #: for 9-30 MB more; on AVX-512 CPUs oneDNN is faster (benchmarks/speed/RESULTS.md, 2026-12-06).
    winograd: Optional[bool] = None


def check_options(options: GradientOptions) -> None:
    """Refuse options that would build a broken learner or train into NaN, naming the option and its range."""
    if options.kind not in ("classification", "regression"):
        raise ValueError(f"learner.kind must be 'classification' or 'regression', got {options.kind!r}")
    if not (math.isfinite(options.inner_lr) and options.inner_lr >= 0):
        raise ValueError(f"learner.inner_lr must be a finite step size >= 0 (a negative one climbs the support "
                         f"loss), got {options.inner_lr}")
    if options.inner_steps < 0:
        raise ValueError(f"learner.inner_steps must be >= 0, got {options.inner_steps}")
    if options.inner_steps_test is not None and options.inner_steps_test < 0:
        raise ValueError(f"learner.inner_steps_test must be >= 0 (or null: inner_steps), got {options.inner_steps_test}")
    if options.ways < 1:
        raise ValueError(f"learner.ways must be >= 1 (classes per task, or the regression target's size), "
                         f"got {options.ways}")
    if options.hidden < 1:
        raise ValueError(f"learner.hidden must be >= 1 (Conv-4 channels), got {options.hidden}")
    if not options.mlp_hidden or min(options.mlp_hidden) < 1:
        raise ValueError(f"learner.mlp_hidden must be a non-empty list of layer sizes >= 1, got {list(options.mlp_hidden)}")
    if options.precision not in PRECISIONS:
        raise ValueError(f"learner.precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    if options.bn_mode not in BN_MODES:
        raise ValueError(f"learner.bn_mode must be one of {', '.join(BN_MODES)}, got {options.bn_mode!r}")
    if options.task_chunk is not None and options.task_chunk < 0:
        raise ValueError(f"learner.task_chunk must be >= 0 (0 = all tasks at once), got {options.task_chunk}")
    if not options.inner_grad_clip >= 0:
        raise ValueError(f"learner.inner_grad_clip must be >= 0 (0 = no limit), got {options.inner_grad_clip}")
    if options.query_chunk < 1:
        raise ValueError(f"learner.query_chunk must be >= 1 (tasks per query pass), got {options.query_chunk}")


def build_network(options: GradientOptions, input_shape: tuple[int, ...]) -> nn.Sequential:
    """body + head: Conv-4 + Linear(ways) for images, MLP + Linear(ways) for vectors."""
    if options.backbone == "conv4":
        if len(input_shape) != 3:
            raise ValueError(f"backbone conv4 needs image inputs (C, H, W), got input shape {input_shape}")
        body: nn.Module = Conv4(in_channels=input_shape[0], hidden=options.hidden)
        features = embedding_dim(body, input_shape)
    elif options.backbone == "mlp":
        body = MLP(int(torch.Size(input_shape).numel()), list(options.mlp_hidden))
        features = list(options.mlp_hidden)[-1]
    else:
        raise ValueError(f"learner.backbone must be 'conv4' or 'mlp', got {options.backbone!r}")
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(features, options.ways)))


#: support examples (of all the tasks in one slice) that an automatic inner-loop slice aims for
SLICE_SUPPORT = 20
#: bound of an automatic slice of a second-order inner loop, in support examples x inner steps: every step's
#: graph of every task in the slice is held until the meta-backward
SLICE_HELD_SUPPORT_STEPS = 50


def auto_task_chunk(support_x: Tensor, held_steps: int = 0) -> int:
    """Tasks per inner-loop slice when ``learner.task_chunk`` is null, for support sets [T, S, ...].

    On the CPU, tasks with small support sets are adapted together in grouped kernels, ``SLICE_SUPPORT // S``
    at a time (4 tasks at 5-way 1-shot; task by task from 11-image support sets on): fewer, larger kernels.
    Measured at 5-way 1-shot (Conv-4, meta-batch 32, 2 threads; benchmarks/speed/RESULTS.md): 0.74-0.87x task
    by task's time for ~20-55 MB more memory on an AVX-512 CPU (AMD EPYC, Zen 5), 0.83x for 15-18 MB more on an
    AVX2 CPU (AMD EPYC, Zen 3), while 20-image support sets gained nothing reliable. ``held_steps``: inner steps
    whose graph the slice keeps for the meta-backward (a second-order meta-training step; 0 otherwise). Their
    memory grows with tasks x support x steps, so such slices hold at most
    ``SLICE_HELD_SUPPORT_STEPS // (S * held_steps)`` tasks (2 at 5-way 1-shot, 5 steps: 0.77-0.81x task by task's
    time for +22 MB on the AVX-512 CPU, 0.90x for +19 MB on the AVX2 one, where 4 tasks took 0.69-0.72x for
    +56 MB on the AVX-512 CPU). GPUs (not measured): task by task.
    """
    if support_x.device.type != "cpu":
        return 1
    support = max(1, support_x.shape[1])
    tasks = SLICE_SUPPORT // support
    if held_steps > 0:
        tasks = min(tasks, SLICE_HELD_SUPPORT_STEPS // (support * held_steps))
    return max(1, tasks)


def chunks(batch: Task, size: int) -> Iterator[Task]:
    """Consecutive slices of ``size`` tasks (all of them when size is 0)."""
    total = len(batch)
    size = total if size <= 0 else size
    for start in range(0, total, size):
        yield Task(*(None if v is None else v[start:start + size]
                     for v in (batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.classes)))


class GradientLearner(MetaLearner):
    """A network adapted per task by the shared inner loop; subclasses choose what adapts and how.

    Subclasses may override :meth:`adapted_names`, :meth:`learning_rates` and :meth:`meta_step`.
    """

    Options = GradientOptions
    divergence_hint = (", or lower learner.inner_lr or set learner.inner_grad_clip (`python "
                       "benchmarks/gradient/inner_gradient_norms.py RUN` prints the inner gradient norms to choose it)")

    def __init__(self, options: GradientOptions, input_shape: tuple[int, ...]) -> None:
        super().__init__(options, input_shape)
        check_options(options)
        self.task_kind = options.kind  # instance attribute read by the evaluator
        self.network = build_network(options, input_shape)
        self._steps_override: int | None = None  # set by predict(batch, steps=...)
        self.loss_fn = classification_losses if options.kind == "classification" else regression_losses
        self.loop = InnerLoop(
            steps=options.inner_steps, lr=options.inner_lr, first_order=options.first_order,
            bn_mode=options.bn_mode, checkpoint=options.checkpoint, channels_last=options.channels_last,
            inner_channels_last=options.inner_channels_last, precision=options.precision,
            fold_conv_norm=options.fold_conv_norm, native_kernels=options.native_kernels, winograd=options.winograd,
            checkpoint_inner_loop=options.checkpoint_inner_loop, grad_clip=options.inner_grad_clip,
        )

    # ------------------------------------------------------------------------ what the algorithm sets
    def adapted_names(self) -> list[str]:
        """Parameters of ``self.network`` that adapt in the inner loop (all of them by default)."""
        return [name for name, _ in self.network.named_parameters()]

    def learning_rates(self) -> dict[str, Tensor] | None:
        """Per-parameter inner learning rates (Meta-SGD), or None for the fixed ``inner_lr``."""
        return None

    # ---------------------------------------------------------------------------------- mechanics
    def parameters_by_name(self) -> dict[str, Tensor]:
        return dict(self.network.named_parameters())

    def check_batch(self, batch: Task) -> None:
        if self.task_kind == "classification":
            ways = int(batch.support_y.max()) + 1
            if ways > self.options.ways:
                raise ValueError(f"tasks have {ways} classes but the learner's head has {self.options.ways} "
                                 f"outputs; set learner.ways={ways} (or more) and retrain")

    def task_chunk(self, batch: Task, training: bool) -> int:
        """Tasks per inner-loop slice of ``batch`` (0 = all): ``learner.task_chunk``, or :func:`auto_task_chunk`.

        ``training``: a meta-training step (whose second-order inner loop keeps its graph), else prediction.
        """
        chosen = self.options.task_chunk
        if chosen is not None:
            return chosen
        held_steps = self.inner_steps(training) if training and not self.loop.first_order else 0
        if held_steps and self.loop.checkpoint_inner_loop:
            held_steps = 1  # one step's graph at a time
        return auto_task_chunk(batch.support_x, held_steps)

    def inner_steps(self, training: bool) -> int:
        """Inner steps in meta-training, or at evaluation (``inner_steps_test``, unless overridden)."""
        if self._steps_override is not None:
            return self._steps_override
        if training or self.options.inner_steps_test is None:
            return self.options.inner_steps
        return self.options.inner_steps_test

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool) -> dict[str, Tensor]:
        """Adapted parameters for T tasks (leading task dimension on the adapted names)."""
        steps = self.inner_steps(training)
        return inner_loop(
            self.network, self.parameters_by_name(), self.adapted_names(), support_x, support_y, self.loss_fn,
            self.loop, steps=steps, lrs=self.learning_rates(), training=training,
            create_graph=None if training else False,
        )

    def query_outputs(self, fast: dict[str, Tensor], query_x: Tensor, training: bool,
                      record: dict | None = None) -> Tensor:
        """Outputs [T, Q, ...] of the adapted networks on the queries."""
        return task_forward(self.network, fast, query_x, self.adapted_names(), self.loop.settings(training, record))

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Mean query loss over the tasks of ``batch`` at the adapted weights, back-propagated.

        The inner loop runs on slices of ``task_chunk`` tasks; the query loss is back-propagated in
        two stages (:func:`~metalab.nn.functional.backward_through_adaptation`), ``query_chunk``
        tasks at a time.
        """
        self.check_batch(batch)
        running = self.options.bn_mode == "running"
        records: list[tuple[dict, int]] = []
        outputs, total = [], len(batch)
        for chunk in chunks(batch, self.task_chunk(batch, training=True)):
            fast = self.adapt_tasks(chunk.support_x, chunk.support_y, training=True)

            def query_loss(params: dict[str, Tensor], start: int, stop: int, chunk: Task = chunk):
                record = {} if running else None
                out = self.query_outputs(params, chunk.query_x[start:stop], training=True, record=record)
                if record is not None:
                    records.append((record, stop - start))
                return self.loss_fn(out, chunk.query_y[start:stop]).sum() / total, out

            outputs.append(backward_through_adaptation(fast, self.adapted_names(), query_loss, len(chunk),
                                                       self.options.query_chunk))
        if records:
            update_running_statistics(self.network, merge_records(records))
        return self.metrics(torch.cat(outputs), batch.query_y)

    def query_outputs_in_chunks(self, fast: dict[str, Tensor], query_x: Tensor, training: bool,
                                records: list[tuple[dict, int]] | None = None) -> Tensor:
        """:meth:`query_outputs` on ``query_chunk`` tasks at a time (no meta-gradient): [T, Q, ...].

        ``records``: when a list, each slice's batch statistics are appended to it (running BatchNorm).
        """
        adapted, size = set(self.adapted_names()), self.options.query_chunk
        outputs = []
        for start in range(0, query_x.shape[0], size):
            stop = min(start + size, query_x.shape[0])
            params = {n: (v[start:stop] if n in adapted else v) for n, v in fast.items()}
            record = {} if records is not None else None
            outputs.append(self.query_outputs(params, query_x[start:stop], training=training, record=record))
            if records is not None:
                records.append((record, stop - start))
        return torch.cat(outputs)

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        loss = self.loss_fn(outputs, targets).mean()
        if self.task_kind == "classification":
            return classification_metrics(outputs, targets, loss)
        return {"loss": loss.detach()}

    def predict(self, batch: Task, steps: int | None = None) -> Tensor:
        """Adapt to each task's support set (``inner_steps_test`` steps, or ``steps``) and predict its queries."""
        self.check_batch(batch)
        if steps is not None:
            self._steps_override = steps
            try:
                return self.predict(batch)
            finally:
                self._steps_override = None
        predictions = []
        for chunk in chunks(batch, self.task_chunk(batch, training=False)):
            with torch.enable_grad():
                fast = self.adapt_tasks(chunk.support_x, chunk.support_y, training=False)
            with torch.no_grad():
                predictions.append(self.query_outputs_in_chunks(_detached(fast), chunk.query_x, training=False))
        out = torch.cat(predictions)
        if self.task_kind == "classification":
            out = out[..., : int(batch.support_y.max()) + 1]
        return out

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        """One task: the adapted network as a function of its query inputs [Q, ...] -> [Q, ways or D].

        With ``bn_mode: transductive`` the queries given in one call are normalised together.
        """
        if self.task_kind == "classification":
            ways = int(support_y.max()) + 1
            missing = set(range(ways)) - set(support_y.tolist())
            if missing:
                raise ValueError(f"support labels must cover 0..{ways - 1}; labels {sorted(missing)} have no examples")
            self.check_batch(Task(support_x[None], support_y[None], support_x[None], support_y[None]))
        with torch.enable_grad():
            fast = _detached(self.adapt_tasks(support_x.unsqueeze(0), support_y.unsqueeze(0), training=False))

        @torch.no_grad()
        def predict(query_x: Tensor) -> Tensor:
            out = self.query_outputs(fast, query_x.unsqueeze(0), training=False)[0]
            return out[..., :ways] if self.task_kind == "classification" else out

        return predict


def _detached(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.detach() for name, value in params.items()}
