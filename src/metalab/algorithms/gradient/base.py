"""What the gradient-based learners share: their options, the network (body + head), adaptation and prediction.

A gradient-based learner adapts an ordinary network to each task with the inner loop of
:mod:`metalab.nn.inner_loop`; its forward passes, task slices and meta-backward run through one
:class:`~metalab.nn.execution.Execution` (the reference path or the speed backend, ``speed.*``). An
algorithm file says which parameters adapt (:meth:`GradientLearner.adapted_names`), with which update rule
(:meth:`GradientLearner.update_rule`), on which support objective, and how its meta-gradient is formed
(``meta_step``).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metalab.algorithms.base import LearnerOptions, MetaLearner, classification_metrics
from metalab.data.task import Task
from metalab.nn.backbones import MLP, build_backbone, embedding_dim, parse_backbone
from metalab.nn.batch_norm import (
    BN_MODES,
    Record,
    batch_norm_step,
    merge_records,
    statistics_for,
    update_running_statistics,
    use_per_step_batch_norm,
)
from metalab.nn.execution import Execution, SpeedOptions
from metalab.nn.inner_loop import (
    SGD,
    InnerLoop,
    Objective,
    Params,
    TaskForward,
    UpdateRule,
    Visit,
    support_minibatches,
    task_loss,
)
from metalab.nn.losses import classification_losses, regression_losses


@dataclass
class GradientOptions(LearnerOptions):
    #: "classification" (an image backbone, linear head over ``ways`` classes) or "regression" (MLP body, linear head).
    kind: str = "classification"
    #: "conv4", "resnet12", "wrn28-10" (images; settings in parentheses, see ``metalab.nn.backbones``) or "mlp"
    #: (vectors).
    backbone: str = "conv4"
    #: Conv-4 channels.
    hidden: int = 64
    #: MLP hidden sizes (regression).
    mlp_hidden: list[int] = field(default_factory=lambda: [40, 40])
    #: output units of the head: classes per task (classification) or target size (regression).
    ways: int = 5
    inner_steps: int = 1
    #: inner steps at evaluation and prediction (None = ``inner_steps``).
    inner_steps_test: int | None = None
    inner_lr: float = 0.4
    #: the largest L2 norm of one task's inner gradient (over its adapted parameters); a longer one is scaled down
    #: to it before the step (before Adam's moments with Reptile's inner Adam), so a plain SGD step is at most
    #: inner_lr * inner_grad_clip long. 0 (default) = no limit. The sinusoid recipes of Reptile, ANIL and T-net set it
    #: (benchmarks/gradient/RESULTS.md: without it, one task's inner steps diverged).
    inner_grad_clip: float = 0.0
    first_order: bool = False
    #: "transductive" (batch statistics of the current set, as in the MAML paper), "running" or "per_step"
    #: (MAML++'s per-step weights, biases and running statistics) (:mod:`metalab.nn.batch_norm`).
    bn_mode: str = "transductive"
    #: running / per_step BatchNorm: the running estimates take the cumulative mean of the first 1/momentum
    #: meta-iterations' statistics before moving by the layer's momentum, so that a model evaluated after a few
    #: meta-iterations is not normalised by the initial (0, 1) estimates (:func:`update_running_statistics`).
    bn_warmup: bool = False


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
        raise ValueError(f"learner.inner_steps_test must be >= 0 (or null: inner_steps), "
                         f"got {options.inner_steps_test}")
    if options.ways < 1:
        raise ValueError(f"learner.ways must be >= 1 (classes per task, or the regression target's size), "
                         f"got {options.ways}")
    if options.hidden < 1:
        raise ValueError(f"learner.hidden must be >= 1 (Conv-4 channels), got {options.hidden}")
    if not options.mlp_hidden or min(options.mlp_hidden) < 1:
        raise ValueError(f"learner.mlp_hidden must be a non-empty list of layer sizes >= 1, "
                         f"got {list(options.mlp_hidden)}")
    if options.bn_mode not in BN_MODES:
        raise ValueError(f"learner.bn_mode must be one of {', '.join(BN_MODES)}, got {options.bn_mode!r}")
    if not options.inner_grad_clip >= 0:
        raise ValueError(f"learner.inner_grad_clip must be >= 0 (0 = no limit), got {options.inner_grad_clip}")
    if options.bn_warmup and options.bn_mode == "transductive":
        raise ValueError("learner.bn_warmup warms up running BatchNorm estimates, which bn_mode=transductive never "
                         "uses: set learner.bn_mode to running or per_step, or drop bn_warmup")


def check_inner_batches(inner_batch: int, inner_batch_test: int) -> None:
    """Refuse a negative ``learner.inner_batch`` / ``inner_batch_test`` (support examples per inner step)."""
    for name, value in (("inner_batch", inner_batch), ("inner_batch_test", inner_batch_test)):
        if value < 0:
            raise ValueError(f"learner.{name} must be >= 0 (support examples per inner step; 0 = all), got {value}")


def inner_minibatches(batch: Task, size: int, steps: int) -> list[Tensor] | None:
    """Per inner step, each task's minibatch of ``size`` support positions [T, size], drawn for the whole
    meta-batch before it is sliced (so slicing never changes which examples a task sees); None when ``size`` is 0
    (every step sees the whole support set)."""
    return support_minibatches(len(batch), batch.support_x.shape[1], size, steps) if size else None


def build_network(options: GradientOptions, input_shape: tuple[int, ...]) -> nn.Sequential:
    """body + head: an image backbone + Linear(ways) for images, MLP + Linear(ways) for vectors."""
    if options.backbone == "mlp":
        body: nn.Module = MLP(int(torch.Size(input_shape).numel()), list(options.mlp_hidden))
        features = list(options.mlp_hidden)[-1]
    else:
        try:
            parse_backbone(options.backbone)
        except ValueError as error:
            raise ValueError(f"learner.backbone: {error}; or 'mlp' for vectors") from None
        if len(input_shape) != 3:
            raise ValueError(f"backbone {options.backbone} needs image inputs (C, H, W), got input shape {input_shape}")
        body = build_backbone(options.backbone, input_shape, options.hidden)
        features = embedding_dim(body, input_shape)
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(features, options.ways)))


class GradientLearner(MetaLearner):
    """A network adapted per task by the shared inner loop; algorithm files choose what adapts and how."""

    options: GradientOptions
    #: the BatchNorm modes the learner implements (``per_step`` needs the step of every support forward)
    bn_modes: tuple[str, ...] = BN_MODES
    divergence_hint = (", or lower learner.inner_lr or set learner.inner_grad_clip (`python "
                       "benchmarks/gradient/inner_gradient_norms.py RUN` prints the inner gradient norms to choose it)")

    def __init__(self, options: GradientOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        check_options(options)
        if options.bn_mode not in self.bn_modes:
            raise ValueError(f"learner.bn_mode={options.bn_mode} is not available to {type(self).__name__}; use one "
                             f"of {', '.join(self.bn_modes)}")
        self.task_kind = options.kind  # instance attribute read by the evaluator
        self.network = self.make_network(options, input_shape)
        #: per-step BatchNorm (bn_mode per_step): inner_steps + 1 sets, see :meth:`batch_norm_set`
        self.per_step_norms = (use_per_step_batch_norm(self.network, options.inner_steps + 1)
                               if options.bn_mode == "per_step" else [])
        for norm in self.per_step_norms:
            norm.step = self.batch_norm_set(None)  # the queries' set, outside the inner loop
        self._support_record: Record | None = None
        self.loss_fn = classification_losses if options.kind == "classification" else regression_losses
        self.execution = Execution(self.speed)
        self._steps_override: int | None = None  # set by predict(batch, steps=...)

    # ------------------------------------------------------------------------ what an algorithm sets
    def make_network(self, options: GradientOptions, input_shape: tuple[int, ...]) -> nn.Module:
        """The network that adapts: body + head (:func:`build_network`; MetaNAS builds a DARTS one-shot network)."""
        return build_network(options, input_shape)

    def adapted_names(self) -> list[str]:
        """Parameters of ``self.network`` that adapt in the inner loop (all of them by default)."""
        return [name for name, _ in self.network.named_parameters()]

    def update_rule(self, training: bool) -> UpdateRule:
        """How a task's inner gradient becomes its step (plain SGD at ``inner_lr`` by default)."""
        return SGD(self.options.inner_lr)

    def support_objective(self) -> Objective:
        """Each task's inner-loop objective [T] (the support loss by default)."""
        return task_loss(self.loss_fn)

    def task_start(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params | None:
        """Each task's own starting point of the inner loop, [T, ...] per adapted name, or None: theta for every
        task (the default). HSML's cluster-gated initialisation and a mixture's chosen component set it."""
        return None

    def inner_loop(self, training: bool) -> InnerLoop:
        return InnerLoop(steps=self.inner_steps(training), rule=self.update_rule(training),
                         first_order=self.options.first_order, grad_clip=self.options.inner_grad_clip)

    # ---------------------------------------------------------------------------------- mechanics
    def parameters_by_name(self) -> dict[str, Tensor]:
        return dict(self.network.named_parameters())

    def check_batch(self, batch: Task) -> None:
        if self.task_kind == "classification":
            ways = int(batch.support_y.max()) + 1
            if ways > self.options.ways:
                raise ValueError(f"tasks have {ways} classes but the learner's head has {self.options.ways} "
                                 f"outputs; set learner.ways={ways} (or more) and retrain")

    def inner_steps(self, training: bool) -> int:
        """Inner steps in meta-training, or at evaluation (``inner_steps_test``, unless overridden)."""
        if self._steps_override is not None:
            return self._steps_override
        if training or self.options.inner_steps_test is None:
            return self.options.inner_steps
        return self.options.inner_steps_test

    def held_steps(self) -> int:
        """Inner steps whose graph a meta-training slice keeps for the meta-backward (0 in first order)."""
        return 0 if self.options.first_order else self.inner_steps(training=True)

    def batch_norm_set(self, step: int | None) -> int:
        """The per-step BatchNorm set of inner step ``step``'s support forward (None: the queries after the steps).

        With K = ``inner_steps`` (meta-training) there are K + 1 sets: step k uses set k, the queries set K (the
        layers' set outside :meth:`adapt_tasks`). An evaluation with more steps uses set K - 1 for the steps
        beyond K - 1 (recipes use K steps at both).
        """
        steps = self.options.inner_steps
        return steps if step is None else min(step, max(steps - 1, 0))

    def network_forward(self, params: Mapping[str, Tensor], x: Tensor, training: bool, record: Record | None = None,
                        inner: bool = False, differentiated_twice: bool = False) -> Tensor:
        """Outputs [T, N, ...] of the network with ``params`` (adapted names [T, ...]) on inputs [T, N, ...]."""
        return self.execution.forward(self.network, params, x, self.adapted_names(),
                                      statistics=statistics_for(self.options.bn_mode, training), record=record,
                                      inner=inner, differentiated_twice=differentiated_twice)

    @contextmanager
    def recording_support(self, record: Record | None) -> Iterator[None]:
        """Per-step BatchNorm in meta-training: while open, :meth:`adapt_tasks` stores its support forwards'
        statistics (one entry per layer and step) in ``record``."""
        self._support_record = record
        try:
            yield
        finally:
            self._support_record = None

    def support_indices(self, batch: Task, training: bool) -> list[Tensor] | None:
        """Per inner step, the support positions each task uses [T, B] (minibatch steps), or None: all of them."""
        return None

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        """Adapted parameters of T tasks (the adapted names with a leading task dimension [T, ...]).

        In meta-training the inner loop keeps its graph (second order) unless ``first_order``; in evaluation
        it never does. ``indices``: see :meth:`support_indices`; each task starts from :meth:`task_start`. Inner
        step k's forward uses per-step BatchNorm set k (:meth:`batch_norm_set`) and records into
        :meth:`recording_support`'s record.
        """
        create_graph = not self.options.first_order if training else False
        record = self._support_record

        def forward_at(step: int) -> TaskForward:
            def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
                with batch_norm_step(self.per_step_norms, self.batch_norm_set(step)):
                    return self.network_forward(params, x, training, record, inner=True,
                                                differentiated_twice=create_graph)
            return forward

        return self.inner_loop(training).adapt(
            forward_at(0), self.parameters_by_name(), self.adapted_names(), support_x, support_y,
            self.support_objective(), create_graph=create_graph, indices=indices,
            unroll=self.execution.unroll if training else None, forward_at=forward_at,
            start=self.task_start(support_x, support_y, training))

    def adapt_first_order(self, support_x: Tensor, support_y: Tensor, training: bool,
                          indices: list[Tensor] | None = None, visit: Visit | None = None) -> Params:
        """Adapted parameters of T tasks [T, ...] by the inner loop from a detached theta, no graph kept (iMAML,
        WarpGrad: their meta-gradients never flow through the steps). ``visit``: see :meth:`InnerLoop.adapt`."""
        theta = {name: value.detach().requires_grad_() for name, value in self.parameters_by_name().items()}

        def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return self.network_forward(params, x, training, inner=True)

        with torch.enable_grad():
            fast = self.inner_loop(training).adapt(forward, theta, self.adapted_names(), support_x, support_y,
                                                   self.support_objective(), create_graph=False, indices=indices,
                                                   visit=visit)
        return {name: value.detach() for name, value in fast.items()}

    def query_outputs(self, fast: Params, query_x: Tensor, training: bool, record: Record | None = None) -> Tensor:
        """Outputs [T, Q, ...] of the adapted networks on the queries."""
        return self.network_forward(fast, query_x, training, record)

    def query_outputs_no_grad(self, fast: Params, query_x: Tensor, training: bool,
                              records: list[tuple[Record, int]] | None = None) -> Tensor:
        """:meth:`query_outputs` without a meta-gradient, in the execution's query slices: [T, Q, ...].

        ``records``: when a list, each slice's batch statistics are appended to it (running BatchNorm).
        """
        adapted = set(self.adapted_names())
        outputs = []
        with torch.no_grad():
            for start, stop in self.execution.query_slices(query_x.shape[0]):
                params = {n: (v[start:stop].detach() if n in adapted else v) for n, v in fast.items()}
                record: Record | None = {} if records is not None else None
                outputs.append(self.query_outputs(params, query_x[start:stop], training, record))
                if records is not None and record is not None:
                    records.append((record, stop - start))
        return torch.cat(outputs)

    def update_batch_norm(self, records: list[tuple[Record, int]]) -> None:
        """Running BatchNorm: move the running estimates toward the statistics recorded in meta-training."""
        if records:
            update_running_statistics(self.network, merge_records(records), warmup=self.options.bn_warmup)

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        loss = self.loss_fn(outputs, targets).mean()
        if self.task_kind == "classification":
            return classification_metrics(outputs, targets, loss)
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------------------- evaluation
    def predict(self, batch: Task, steps: int | None = None) -> Tensor:
        """Adapt to each task's support set (``inner_steps_test`` steps, or ``steps``) and predict its queries."""
        self.check_batch(batch)
        if steps is not None:
            self._steps_override = steps
            try:
                return self.predict(batch)
            finally:
                self._steps_override = None
        indices = self.support_indices(batch, training=False)  # drawn before slicing: slices never change them
        predictions, start = [], 0
        for tasks in self.execution.task_slices(batch):
            stop = start + len(tasks)
            with torch.enable_grad():
                fast = self.adapt_tasks(tasks.support_x, tasks.support_y, training=False,
                                        indices=None if indices is None else [index[start:stop] for index in indices])
            predictions.append(self.query_outputs_no_grad(fast, tasks.query_x, training=False))
            start = stop
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
            fast = {name: value.detach() for name, value in
                    self.adapt_tasks(support_x.unsqueeze(0), support_y.unsqueeze(0), training=False).items()}

        @torch.no_grad()
        def predict(query_x: Tensor) -> Tensor:
            out = self.query_outputs(fast, query_x.unsqueeze(0), training=False)[0]
            return out[..., :ways] if self.task_kind == "classification" else out

        return predict
