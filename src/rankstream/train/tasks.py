"""Imports the modules that register the built-in tasks (see ``registry.TASKS``)."""

from rankstream.train import (
    ranking,  # noqa: F401  (registers "ranking")
    sequential,  # noqa: F401  (registers "sequential")
)
