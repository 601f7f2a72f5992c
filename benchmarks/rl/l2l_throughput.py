"""Rollout throughput of learn2learn's MAML-TRPO example (``examples/rl/maml_trpo.py`` of learn2learn 0.2.0) on
its 2D-navigation task (``Particles2D-v1``, 100-step episodes, goals in [-0.5, 0.5]^2): environment steps per
second of the example's own sampling path (``gym.make`` + cherry's ``ActionSpaceScaler``, learn2learn's
process-pool ``AsyncVectorEnv`` of ``num_workers`` processes, cherry's ``Torch`` wrapper and ``Runner``, the
example's ``DiagNormalPolicy`` 100-100), for comparison with ``benchmarks/rl/throughput.py``.

learn2learn is not a dependency of metalab and does not install into its environment (see RESULTS.md for how it
was installed beside it); the example's folder must be given, since its policy lives there:

    PYTHONPATH=src:$L2L_SITE python benchmarks/rl/l2l_throughput.py PATH/TO/learn2learn/examples/rl
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def _torchvision_schemas() -> None:
    """torchvision 0.28's C extension does not load beside this torch; its Python part imports once its two
    operator schemas exist (learn2learn imports torchvision; no torchvision operator is called here)."""
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_schemas.library = library  # type: ignore[attr-defined]


def raw_single_env(gym: object, steps: int) -> float:
    """The bare environment, one ``step`` after another with random actions."""
    env = gym.make("Particles2D-v1")  # type: ignore[attr-defined]
    env.seed(0)
    env.set_task(env.sample_tasks(1)[0])
    env.reset()
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, size=(steps, 2)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        _, _, done, _ = env.step(action)
        if done:
            env.reset()
    return steps / (time.perf_counter() - start)


def example_rollouts(workers: int, episodes: int, repeats: int) -> float:
    """What maml_trpo.py does per task: ``Runner(env).run(policy, episodes=adapt_bsz)`` on ``workers`` processes."""
    import cherry as ch
    import gym
    import learn2learn as l2l
    from policies import DiagNormalPolicy

    def make_env() -> object:
        return ch.envs.ActionSpaceScaler(gym.make("Particles2D-v1"))

    env = l2l.gym.AsyncVectorEnv([make_env for _ in range(workers)])
    env.seed(42)
    env = ch.envs.Torch(env)
    policy = DiagNormalPolicy(env.state_size, env.action_size)
    tasks = env.sample_tasks(repeats + 1)
    steps, start = 0, 0.0
    for r, task in enumerate(tasks):
        if r == 1:
            start = time.perf_counter()  # the first task warms the workers up
        env.set_task(task)
        env.reset()
        replay = ch.envs.Runner(env).run(policy, episodes=episodes)
        if r >= 1:
            steps += len(replay)
    seconds = time.perf_counter() - start
    env.close()
    return steps / seconds


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: l2l_throughput.py PATH/TO/learn2learn/examples/rl (the example's folder: its policies.py)")
    sys.path.insert(0, sys.argv[1])
    torch.set_num_threads(1)
    _torchvision_schemas()
    try:
        import gym
        import learn2learn
    except ImportError as error:
        sys.exit(f"learn2learn's example needs learn2learn, cherry-rl and gym 0.21 importable: {error}; "
                 "see benchmarks/rl/RESULTS.md for how they were installed beside metalab")
    print(f"learn2learn {learn2learn.__version__}, gym {gym.__version__}, torch {torch.__version__}")
    rows = {"raw Particles2D.step, 1 env": raw_single_env(gym, 20000),
            "example rollouts, 1 worker, 20 episodes": example_rollouts(1, 20, 3),
            "example rollouts, 10 workers (its default), 20 episodes": example_rollouts(10, 20, 3)}
    for name, value in rows.items():
        print(f"{name:58s} {value:10.0f} env steps/s")
    print(json.dumps({name: round(value) for name, value in rows.items()}))
