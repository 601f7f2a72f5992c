"""Where tasks come from: class datasets, episode samplers, regression task families."""
from metalab.data.classes import ClassDataset
from metalab.data.episodes import Episode, EpisodeSampler, FixedEpisodes
from metalab.data.task import Task

__all__ = ["ClassDataset", "Episode", "EpisodeSampler", "FixedEpisodes", "Task"]
