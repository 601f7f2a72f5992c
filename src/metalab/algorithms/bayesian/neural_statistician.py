"""The Neural Statistician (Edwards & Storkey 2017, "Towards a Neural Statistician"): a variational autoencoder of
data sets, whose context latent c summarises a set; few-shot classification by the posterior over c.

Each class of a task is one data set D (its support and query images together, in meta-training). The generative
model (the paper's basic model, with one latent layer z) and its inference networks:

    p(D) = int p(c) prod_{x in D} int p(x | z, c) p(z | c) dz dc,       p(c) = N(0, I)
    q(c | D) = N(mu_c, sigma_c^2) = post(mean_{x in D} pre(e(x)))         the statistic network (mean pooling)
    q(z | x, c) = N(.) of [e(x), c];  p(z | c) = N(.) of c;  p(x | z, c) = Bernoulli(logits of [z, c])

and the paper's variational lower bound per data set, maximised over all sets of the batch (reparameterised, one sample
of c and of each z), reported per example:

    L_D = E_{q(c|D)} [ sum_{x in D} E_{q(z|x,c)} log p(x | z, c) - KL(q(z | x, c) || p(z | c)) ] - KL(q(c | D) || p(c)).

Few-shot classification (the paper's Omniglot experiment): the context posterior of each support class,
q(c | D_k), and of a query alone, q(c | x); the query's class is the one whose posterior is nearest,
argmin_k KL(q(c | x) || q(c | D_k)), and the predictive distribution is the softmax of -KL over the classes
(our choice of probabilities; the paper only takes the argmin). e is the Conv-4 encoder; the decoder is an MLP
over the pixels (the paper's networks are convolutional, with three latent layers).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from metalab.algorithms.base import classification_metrics, ways_of
from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions, embed_batch
from metalab.algorithms.model.components.processes import gaussian
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import MLP
from metalab.nn.class_pooling import class_means
from metalab.nn.execution import SpeedOptions

#: the smallest standard deviation of the latent Gaussians (keeps the KL terms finite)
STD_FLOOR = 0.01


@dataclass
class NeuralStatisticianOptions(EncoderOptions):
    #: size of the context latent c
    context_size: int = 64
    #: size of the per-example latent z
    latent_size: int = 16
    #: width of the statistic network, the z networks and the decoder's hidden layers
    width: int = 256


@register("neural-statistician")
class NeuralStatistician(EmbeddingClassifier):
    """Data sets -> context posterior q(c | D); trained by the ELBO, classifies by KL between context posteriors."""

    options: NeuralStatisticianOptions

    def __init__(self, options: NeuralStatisticianOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        o = options
        if min(o.context_size, o.latent_size, o.width) < 1:
            raise ValueError(f"learner.context_size, learner.latent_size and learner.width must be >= 1, got "
                             f"{o.context_size}, {o.latent_size} and {o.width}")
        self.pixels = int(torch.Size(input_shape).numel())
        self.pre_pool = MLP(self.embedding_size, [o.width], o.width)
        self.post_pool = MLP(o.width, [o.width], 2 * o.context_size)
        self.posterior_z = MLP(self.embedding_size + o.context_size, [o.width], 2 * o.latent_size)
        self.prior_z = MLP(o.context_size, [o.width], 2 * o.latent_size)
        self.decoder = MLP(o.latent_size + o.context_size, [o.width, o.width], self.pixels)

    def context(self, pooled: Tensor) -> Normal:
        """q(c | D) from the mean of pre(e(x)) over D: [..., width] -> Normal over [..., context_size]."""
        return gaussian(self.post_pool(pooled), STD_FLOOR)

    def class_contexts(self, embeddings: Tensor, labels: Tensor, ways: int) -> Normal:
        """q(c | D_k) of each class k's examples: embeddings [T, N, E], labels [T, N] -> Normal over [T, W, C]."""
        return self.context(class_means(self.pre_pool(embeddings), labels, ways))

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Logits [T, Q, W] = -KL(q(c | x_q) || q(c | D_k)), the support classes' posteriors D_k."""
        classes = self.class_contexts(support, support_y, ways)  # [T, W, C]
        queries = self.context(self.pre_pool(query))  # [T, Q, C]
        return -self.context_divergence(queries, classes)

    @staticmethod
    def context_divergence(queries: Normal, classes: Normal) -> Tensor:
        """KL(queries_q || classes_k) summed over the context dimensions: [T, Q, C] and [T, W, C] -> [T, Q, W]."""
        query = Normal(queries.loc.unsqueeze(2), queries.scale.unsqueeze(2))
        cls = Normal(classes.loc.unsqueeze(1), classes.scale.unsqueeze(1))
        return kl_divergence(query, cls).sum(-1)

    def elbo_terms(self, x: Tensor, labels: Tensor, ways: int) -> dict[str, Tensor]:
        """The terms of L_D for the data sets of T tasks (each class one set): x [T, N, ...], labels [T, N].

        Returns per task [T]: ``reconstruction`` = sum_x log p(x | z, c), ``kl_z`` = sum_x KL(q(z|x,c) || p(z|c)),
        ``kl_c`` = sum_k KL(q(c | D_k) || p(c)), and ``examples`` N.
        """
        embeddings = self.encoder(x.flatten(0, 1)).unflatten(0, x.shape[:2])  # [T, N, E]
        contexts = self.class_contexts(embeddings, labels, ways)  # [T, W, C]
        c = contexts.rsample()  # one draw of each set's context
        prior_c = Normal(torch.zeros_like(c), torch.ones_like(c))
        c_x = c.gather(1, labels.unsqueeze(-1).expand(-1, -1, c.shape[-1]))  # each example's set's c [T, N, C]
        posterior_z = gaussian(self.posterior_z(torch.cat([embeddings, c_x], -1)), STD_FLOOR)
        prior_z = gaussian(self.prior_z(c_x), STD_FLOOR)
        z = posterior_z.rsample()
        logits = self.decoder(torch.cat([z, c_x], -1))  # [T, N, pixels]
        pixels = x.flatten(2).to(logits.dtype)
        reconstruction = -F.binary_cross_entropy_with_logits(logits, pixels, reduction="none").sum(-1)  # [T, N]
        present = F.one_hot(labels, ways).amax(1).to(c.dtype)  # [T, W]: classes with examples
        return {
            "reconstruction": reconstruction.sum(1),
            "kl_z": kl_divergence(posterior_z, prior_z).sum(-1).sum(1),
            "kl_c": (kl_divergence(contexts, prior_c).sum(-1) * present).sum(1),
            "examples": torch.full_like(reconstruction[:, 0], x.shape[1]),
        }

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """-ELBO per example over the classes of every task (support and query images together), into ``.grad``;
        the query accuracy of the KL classifier as a metric."""
        ways = ways_of(batch.support_y)
        terms = self.elbo_terms(torch.cat([batch.support_x, batch.query_x], 1),
                                torch.cat([batch.support_y, batch.query_y], 1), ways)
        elbo = terms["reconstruction"] - terms["kl_z"] - terms["kl_c"]
        loss = -(elbo / terms["examples"]).mean()
        loss.backward()
        with torch.no_grad():
            support, query = embed_batch(self.encoder, batch.support_x, batch.query_x)
            logits = self.head(support, batch.support_y, query, ways)
        metrics = classification_metrics(logits, batch.query_y, loss)
        per_example = {name: (terms[name] / terms["examples"]).mean().detach() for name in ("kl_z", "kl_c")}
        return {**metrics, **per_example}
