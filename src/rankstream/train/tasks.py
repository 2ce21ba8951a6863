"""Imports the modules that register the built-in tasks (see ``registry.TASKS``)."""

from rankstream.train import sequential  # noqa: F401  (registers "sequential")
from rankstream.train import ranking  # noqa: F401  (registers "ranking")
