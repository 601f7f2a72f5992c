"""The environment families by name (``data.dataset``), and the task stream of a split."""
from __future__ import annotations

from metalab.envs.tasks import EnvFamily, EnvTasks

#: the names ``data.dataset`` takes for environments (K: arms; SKILL: a Meta-World ML1 skill, e.g. reach)
FAMILY_NAMES = ("navigation2d", "bandit-K", "tabular-mdp", "cheetah-dir", "cheetah-vel", "metaworld-ml1-SKILL")


def is_environment(name: str) -> bool:
    """Whether ``data.dataset`` names an environment family rather than a data set."""
    return name in ("navigation2d", "tabular-mdp", "cheetah-dir", "cheetah-vel") or name.startswith(
        ("bandit-", "metaworld-ml1-"))


def environment_family(name: str, horizon: int | None = None) -> EnvFamily:
    """The family ``name``; ``horizon`` (``data.horizon``) overrides its episode length (not a bandit's: one
    pull)."""
    if horizon is not None and horizon < 1:
        raise ValueError(f"data.horizon must be >= 1 (steps per episode) or null (the environment's own), "
                         f"got {horizon}")
    if name == "navigation2d":
        from metalab.envs.navigation import navigation_family

        return navigation_family(horizon)
    if name.startswith("bandit-"):
        from metalab.envs.bandit import bandit_family

        arms = name.removeprefix("bandit-")
        if not arms.isdigit():
            raise ValueError(f"data.dataset={name!r}: a bandit is named bandit-K with K its number of arms, "
                             f"e.g. bandit-10")
        return bandit_family(int(arms))
    if name == "tabular-mdp":
        from metalab.envs.tabular_mdp import tabular_mdp_family

        return tabular_mdp_family(horizon)
    if name in ("cheetah-dir", "cheetah-vel"):
        from metalab.envs.cheetah import cheetah_family

        return cheetah_family(name.removeprefix("cheetah-"), horizon)
    if name.startswith("metaworld-ml1-"):
        from metalab.envs.meta_world import metaworld_family

        return metaworld_family(name.removeprefix("metaworld-ml1-"), horizon)
    raise ValueError(f"unknown environment family {name!r}; known: {', '.join(FAMILY_NAMES)}")


def environment_tasks(name: str, split: str, shots: int, queries: int, seed: int,
                      horizon: int | None = None, pool: int | None = None) -> EnvTasks:
    """The seeded task stream of ``split`` of family ``name`` (cycling through ``pool`` tasks if given)."""
    return EnvTasks(environment_family(name, horizon), split, shots, queries, seed, pool)
