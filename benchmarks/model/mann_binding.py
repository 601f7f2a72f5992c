"""Can MANN bind an input to its label? A synthetic check of the memory mechanics (no images).

Each episode: W classes, each a distinct one-hot "image" drawn from V positions; labels 0..W-1 are
assigned at random per episode; every class is presented P times in random order with time-offset
labels (Santoro et al. 2016). From the 2nd presentation on, the label can only come from binding.
Prints the loss and the accuracy by presentation every 100 steps; at the end, for the MANN variants,
the accuracy on 1000 fresh episodes as trained and with the memory reads zeroed (is the binding in
the memory or in the controller's LSTM state?).

    python benchmarks/model/mann_binding.py VARIANT --steps 1000 [--ways 3 --vocabulary 6 --presentations 5]

VARIANT: ``mann`` (the library's MANN), ``mann-prefix`` (the same network with the memory step used
before the fix: reads addressed after writing the key itself), ``lstm`` (an LSTM of the same width
without memory, the baseline the memory has to beat).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import metalab.algorithms.model.mann as mann_module
from mann_presentations import memory_reads_zeroed  # this folder's script (sys.path[0] when run as a script)
from metalab.algorithms.model.components.memory import MemoryState, content_weights, least_used_weights
from metalab.algorithms.model.components.sequence import offset_label_steps
from metalab.algorithms.model.mann import MANN, MANNOptions, accuracy_by_presentation


def prefix_lrua_step(state, keys, write_gate, gamma, written=None):
    """The memory step before the fix: the key is written, then reads are addressed on the new memory."""
    heads = keys.shape[1]
    least_used = least_used_weights(state.usage, heads)
    erase = F.one_hot(state.usage.argmin(dim=-1), state.usage.shape[-1]).to(keys.dtype)
    memory = state.memory * (1.0 - erase).unsqueeze(-1)
    gate = torch.sigmoid(write_gate).unsqueeze(-1)
    write_weights = gate * state.read_weights + (1.0 - gate) * least_used.unsqueeze(1)
    memory = memory + write_weights.transpose(1, 2) @ keys
    read_weights = content_weights(keys, memory)
    reads = read_weights @ memory
    usage = gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
    return MemoryState(memory, usage, read_weights, reads), reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["mann", "mann-prefix", "lstm"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--ways", type=int, default=3)
    parser.add_argument("--vocabulary", type=int, default=6)
    parser.add_argument("--presentations", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    V, W, P, B = args.vocabulary, args.ways, args.presentations, args.batch
    hidden = 64
    if args.variant == "lstm":
        lstm, out = torch.nn.LSTM(V + W, hidden, batch_first=True), torch.nn.Linear(hidden, W)
        parameters = [*lstm.parameters(), *out.parameters()]

        def logits_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return out(lstm(offset_label_steps(x.flatten(2), y, W))[0])
    else:
        if args.variant == "mann-prefix":
            mann_module.lrua_step = prefix_lrua_step
        model = MANN(MANNOptions(name="mann", encoder="pixels", controller="lstm", controller_size=hidden,
                                 memory_slots=32, memory_size=16, read_heads=1, max_ways=W), (1, 1, V))
        parameters = list(model.parameters())
        logits_of = model.sequence_logits
    optimizer = torch.optim.Adam(parameters, lr=args.lr)
    start = time.time()
    for step in range(args.steps):
        x, y = episodes(B, V, W, P)
        logits = logits_of(x, y)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            accuracy = accuracy_by_presentation(logits.detach(), y, (1, 2, 3, 5))
            print(step + 1, round(loss.item(), 3), {k: round(v, 2) for k, v in accuracy.items()},
                  f"{time.time() - start:.0f}s", flush=True)
    if args.variant != "lstm":
        report_memory_ablation(logits_of, V, W, P)


def episodes(batch: int, vocabulary: int, ways: int, presentations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, W*P, 1, 1, V] one-hot inputs, y [B, W*P] labels: W distinct inputs per episode, shuffled."""
    items = torch.rand(batch, vocabulary).argsort(1)[:, :ways]
    order = torch.rand(batch, ways * presentations).argsort(1)
    y = torch.arange(ways).repeat(presentations).expand(batch, -1).gather(1, order)
    x = F.one_hot(items.gather(1, y), vocabulary).float().view(batch, ways * presentations, 1, 1, vocabulary)
    return x, y


@torch.no_grad()
def report_memory_ablation(logits_of, V: int, W: int, P: int, batch: int = 1000) -> None:
    """Accuracy by presentation on fresh episodes, as trained and with every memory read replaced by zeros.

    If the trained MANN binds labels through its memory, zeroing the reads (the memory is still
    written, but nothing comes back to the controller or the output layer) must cost accuracy from
    the 2nd presentation on; if it binds them in the controller's LSTM state, nothing changes.
    """
    torch.manual_seed(1)
    x, y = episodes(batch, V, W, P)
    trained = accuracy_by_presentation(logits_of(x, y), y, (1, 2, 3, 5))
    with memory_reads_zeroed():
        ablated = accuracy_by_presentation(logits_of(x, y), y, (1, 2, 3, 5))
    print(f"{batch} fresh episodes, accuracy by presentation: trained",
          {k: round(v, 3) for k, v in trained.items()}, "| memory reads zeroed",
          {k: round(v, 3) for k, v in ablated.items()}, flush=True)


if __name__ == "__main__":
    main()
