"""Imports the modules that register the built-in tasks (see ``registry.TASKS``)."""

from rankstream.train import (  # noqa: F401  (registration)
    ranking,  # "ranking"
    sequential,  # "sequential"
    stream,  # "stream"
)
