"""SNAIL's temporal network on a synthetic copy problem: the query vector equals one support vector.

The answer can only be read from the support steps (vector + one-hot label), so the loss stays at
ln(ways) until the network learns to attend from the query to its matching support step.

    python benchmarks/model/snail_copy.py [--relu]   # prints step, loss, batch accuracy every 40 steps
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from metalab.algorithms.model.snail import SNAILNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relu", action="store_true", help="non-negative vectors, like Conv-4 embeddings")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ways, size, batch = 5, 64, 64
    net = SNAILNet(size + ways, ways, ways + 1)  # the paper's Omniglot network
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    rows = torch.arange(batch)
    for step in range(args.steps):
        x = torch.randn(batch, ways, size)
        if args.relu:
            x = x.relu()
        y = torch.rand(batch, ways).argsort(1)  # a random labelling of the support vectors
        q = torch.randint(ways, (batch,))
        support = torch.cat([x, F.one_hot(y, ways).float()], -1)
        query = torch.cat([x[rows, q], torch.zeros(batch, ways)], -1).unsqueeze(1)
        logits = net(torch.cat([support, query], 1))[:, -1]
        target = y[rows, q]
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 40 == 0:
            print(step + 1, round(loss.item(), 4), (logits.argmax(-1) == target).float().mean().item(), flush=True)


if __name__ == "__main__":
    main()
