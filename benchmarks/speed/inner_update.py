"""Microbenchmark of the inner step's parameter update (18 Conv-4 tensors, 2 tasks): lr * grad then sub, sub with
alpha=lr, and _foreach_sub; forward + backward with create_graph. First checks the three agree (float64).
Usage: .venv/bin/python benchmarks/speed/inner_update.py"""
import time

import torch

from metalab.nn.backbones import Conv4

torch.set_num_threads(1)

net = torch.nn.Sequential(Conv4(1, 64), torch.nn.Linear(64, 5))
shapes = [p.shape for p in net.parameters()]
print(len(shapes))
def make():
    base = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    fast = [b.unsqueeze(0).expand(2, *b.shape) for b in base]
    return base, fast
lr = 0.1
def variant(kind, fast, grads):
    if kind == "mulsub":
        return [f - lr * g for f, g in zip(fast, grads)]
    if kind == "alpha":
        return [torch.sub(f, g, alpha=lr) for f, g in zip(fast, grads)]
    if kind == "foreach":
        return list(torch._foreach_sub(fast, grads, alpha=lr))
def check():
    outs = {}
    for kind in ["mulsub", "alpha", "foreach"]:
        torch.manual_seed(0)
        base, fast = make()
        w = [torch.randn(2, *s, dtype=torch.float64, requires_grad=True) for s in shapes]
        # grads depend on fast and w (to test second order)
        grads = [(f * ww).tanh() for f, ww in zip(fast, w)]
        new = variant(kind, fast, grads)
        loss = sum((n ** 2).sum() for n in new)
        g = torch.autograd.grad(loss, base + w, create_graph=True)
        gg = torch.autograd.grad(sum(x.sum() for x in g), base)
        outs[kind] = torch.cat([x.flatten() for x in list(g) + list(gg)])
    print({k: (v - outs["mulsub"]).abs().max().item() for k, v in outs.items()})
check()
def bench(kind, reps=200):
    base = [torch.randn(s, requires_grad=True) for s in shapes]
    fast = [b.unsqueeze(0).expand(2, *b.shape) for b in base]
    grads = [torch.randn(2, *s, requires_grad=True) for s in shapes]
    t = time.perf_counter()
    for _ in range(reps):
        new = variant(kind, fast, grads)
        torch.autograd.grad(new, base + grads, [torch.ones_like(n) for n in new], create_graph=True)
    return (time.perf_counter() - t) / reps * 1e3
for k in ["mulsub", "alpha", "foreach"] * 2:
    print(k, round(bench(k), 3), "ms")
