"""Memory-Augmented Neural Network (Santoro et al. 2016): a controller with an LRUA external memory.

An episode is a sequence; step t receives input x_t with the previous step's label y_{t-1}
(time-offset labels) and must predict y_t, so the network has to bind each input to the label
that arrives one step later, through its memory. Meta-training uses the paper's protocol: all items
of a task (support and query) in random order, a loss at every step. For the one evaluator the
support set is read as such a sequence and every query is a final step (queries in parallel, each
continuing from the state after the support set).

Memory mechanics (``metalab.algorithms.model.components.memory``): reads are addressed on the
memory before the step's write, and by default the controller writes a vector a_t of its own next
to the read keys k_t. An earlier version addressed reads after writing the key itself; every read
then found its own fresh copy, so nothing stored earlier could be retrieved.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.base import classification_metrics
from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions, check_ways
from metalab.algorithms.model.components.memory import MemoryState, lrua_step
from metalab.algorithms.model.components.sequence import offset_label_steps, one_hot, shuffle_support
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions


@dataclass
class MANNOptions(EncoderOptions):
    #: "lstm" or "feedforward"
    controller: str = "lstm"
    controller_size: int = 200
    memory_slots: int = 128
    memory_size: int = 40
    read_heads: int = 4
    #: usage decay gamma
    gamma: float = 0.95
    #: write the read keys themselves (the paper's equation) instead of separate vectors a_t from the
    #: controller (the public implementations; see metalab.algorithms.model.components.memory)
    write_keys: bool = False
    #: size of the one-hot label input and of the output layer
    max_ways: int = 5


@register("mann")
class MANN(EmbeddingClassifier):
    options: MANNOptions

    def __init__(self, options: MANNOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.controller not in ("lstm", "feedforward"):
            raise ValueError(f"learner.controller must be 'lstm' or 'feedforward', got {options.controller!r}")
        reads = options.read_heads * options.memory_size
        controller_in = self.embedding_size + options.max_ways + reads
        if options.controller == "lstm":
            self.controller: nn.Module = nn.LSTMCell(controller_in, options.controller_size)
        else:
            self.controller = nn.Sequential(nn.Linear(controller_in, options.controller_size), nn.Tanh())
        self.keys = nn.Linear(options.controller_size, reads)
        self.written = None if options.write_keys else nn.Linear(options.controller_size, reads)
        self.write_gate = nn.Linear(options.controller_size, options.read_heads)
        self.output = nn.Linear(options.controller_size + reads, options.max_ways)

    # ------------------------------------------------------------------------------- recurrence
    def initial_state(self, batch: int, reference: Tensor) -> tuple:
        o = self.options
        memory = MemoryState.initial(batch, o.memory_slots, o.memory_size, o.read_heads, reference.device,
                                     reference.dtype)
        if o.controller == "lstm":
            zeros = reference.new_zeros(batch, o.controller_size)
            return (zeros, zeros.clone()), memory
        return None, memory

    def step(self, inputs: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """One time step: inputs [B, features + max_ways] -> logits [B, max_ways], new state."""
        controller_state, memory = state
        controller_in = torch.cat([inputs, memory.reads.flatten(1)], dim=-1)
        if self.options.controller == "lstm":
            hidden, cell = self.controller(controller_in, controller_state)
            controller_state = (hidden, cell)
        else:
            hidden = self.controller(controller_in)
        heads = (hidden.shape[0], self.options.read_heads, self.options.memory_size)
        keys = torch.tanh(self.keys(hidden)).view(heads)
        written = None if self.written is None else torch.tanh(self.written(hidden)).view(heads)
        memory, reads = lrua_step(memory, keys, self.write_gate(hidden), self.options.gamma, written)
        logits = self.output(torch.cat([hidden, reads.flatten(1)], dim=-1))
        return logits, (controller_state, memory)

    def run(self, steps: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        """A batch of sequences [B, L, F] -> logits [B, L, max_ways] and the final state."""
        state = state if state is not None else self.initial_state(steps.shape[0], steps)
        outputs = []
        for t in range(steps.shape[1]):
            logits, state = self.step(steps[:, t], state)
            outputs.append(logits)
        return torch.stack(outputs, dim=1), state

    def sequence_logits(self, x: Tensor, y: Tensor) -> Tensor:
        """The paper's protocol: sequences of inputs x [B, L, ...] with labels y [B, L] in the given order.

        Returns logits [B, L, max_ways]; step t has seen the labels of steps 0..t-1 only.
        """
        check_ways(int(y.max()) + 1, self.options.max_ways)
        features = self.encoder(x.flatten(0, 1)).flatten(1).view(*x.shape[:2], -1)
        return self.run(offset_label_steps(features, y, self.options.max_ways))[0]

    # ------------------------------------------------------------------------- the one API
    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        order = torch.rand(y.shape).argsort(dim=1).to(y.device)
        x = x.gather(1, order.view(*order.shape, *[1] * (x.dim() - 2)).expand_as(x))
        y = y.gather(1, order)
        ways = int(y.max()) + 1
        logits = self.sequence_logits(x, y)[..., :ways]
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        return classification_metrics(logits, y, loss)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        tasks, queries = query.shape[:2]
        support, labels = shuffle_support(support, support_y, self.training)
        _, state = self.run(offset_label_steps(support, labels, self.options.max_ways))
        # Each query is a final step after the support sequence, carrying the last support label.
        last_label = one_hot(labels[:, -1], self.options.max_ways, query.dtype)
        query_steps = torch.cat([query, last_label.unsqueeze(1).expand(-1, queries, -1)], dim=-1)
        controller_state, memory = state
        if controller_state is not None:
            controller_state = tuple(s.repeat_interleave(queries, dim=0) for s in controller_state)
        logits, _ = self.step(query_steps.flatten(0, 1), (controller_state, memory.repeat_interleave(queries)))
        return logits.view(tasks, queries, -1)[..., :ways]


def accuracy_by_presentation(logits: Tensor, labels: Tensor,
                             presentations: tuple[int, ...] = (1, 2, 3, 5, 10)) -> dict[int, float]:
    """Santoro et al.'s table: accuracy on the n-th presentation of a class within a sequence.

    logits [B, L, W], labels [B, L] -> {n: accuracy over all steps that are the n-th instance of their class}.
    """
    ways = logits.shape[-1]
    seen = one_hot(labels, max(ways, int(labels.max()) + 1), torch.long).cumsum(dim=1)
    instance = seen.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [B, L], 1 for a first presentation
    correct = logits.argmax(-1) == labels
    return {n: float(correct[instance == n].float().mean()) for n in presentations if bool((instance == n).any())}
