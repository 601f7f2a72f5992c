"""The plain recurrent black-box learner: an LSTM reads the labelled support sequence, then the query.

The "mechanistic view" of meta-learning, y = f(D_train, x; theta), with f an LSTM: support steps
carry (embedding, one-hot label); the LSTM state after the support set summarises the task and
each query is one more step from that state (in parallel), whose output gives the query's logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions
from metalab.algorithms.model.components.sequence import labelled_steps, shuffle_support, unlabelled_steps
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions


@dataclass
class BlackBoxOptions(EncoderOptions):
    lstm_size: int = 256
    lstm_layers: int = 1
    #: size of the one-hot label input and of the output layer
    max_ways: int = 5


@register("blackbox")
class BlackBoxLSTM(EmbeddingClassifier):
    options: BlackBoxOptions

    def __init__(self, options: BlackBoxOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.lstm = nn.LSTM(self.embedding_size + options.max_ways, options.lstm_size, options.lstm_layers,
                            batch_first=True)
        self.output = nn.Linear(options.lstm_size, options.max_ways)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        tasks, queries = query.shape[:2]
        support, labels = shuffle_support(support, support_y, self.training)
        _, (hidden, cell) = self.lstm(labelled_steps(support, labels, self.options.max_ways))
        # every query continues from its task's post-support state: [layers, T, H] -> [layers, T * Q, H]
        state = (hidden.repeat_interleave(queries, dim=1), cell.repeat_interleave(queries, dim=1))
        query_steps = unlabelled_steps(query, self.options.max_ways).flatten(0, 1).unsqueeze(1)  # [T * Q, 1, F]
        outputs, _ = self.lstm(query_steps, state)
        return self.output(outputs[:, -1]).view(tasks, queries, -1)[..., :ways]
