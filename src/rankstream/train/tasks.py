"""Imports the modules that register the built-in tasks (see ``registry.TASKS``)."""

from rankstream.train import sequential  # noqa: F401  (registers "sequential")
from rankstream.train import stream as _stream  # noqa: F401  (registers "stream")
