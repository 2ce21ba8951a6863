"""One small explicit registry for user-facing names (models, dataset loaders, tasks).

Names are registered once, where the thing is defined; a duplicate name is an error and an
unknown name gives a one-line error listing the known ones. ``rankstream list`` prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise RegistryError(f"duplicate {self.kind} name '{name}'")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        _load_builtins()
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._entries))})"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._entries)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its config class, its constructor and the task it trains on."""

    name: str
    config_cls: type
    build: Callable[..., Any]  # (config, **data-derived sizes) -> nn.Module
    task: str  # "sequential" (next-item retrieval) | "ranking" | ...
    doc: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered loader: reads a path under the data directory into an EventLog."""

    name: str
    load: Callable[..., Any]
    doc: str = ""
    # Optional: given a missing path, fetch the official archive there (network permitting).
    fetch: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: how ``train``/``bench``/``eval`` run the models that name it.

    ``run(cfg, data_dir, dist, console) -> result dict`` (``None`` on ranks other than 0)
    trains, evaluates and describes one experiment; ``evaluate(cfg, data_dir, checkpoint)
    -> result dict`` scores a saved checkpoint. ``data_cls`` / ``train_cls`` / ``eval_cls``
    type the config's ``data`` / ``train`` / ``eval`` sections for this task's models.
    """

    name: str
    run: Callable[..., Any]
    evaluate: Callable[..., Any]
    data_cls: type
    train_cls: type
    eval_cls: type
    doc: str = ""


MODELS: Registry[ModelEntry] = Registry("model")
LOADERS: Registry[DatasetEntry] = Registry("dataset loader")
TASKS: Registry[TaskEntry] = Registry("task")


def register_model(name: str, config_cls: type, task: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a model factory ``build(config, **sizes) -> nn.Module``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.add(name, ModelEntry(name, config_cls, fn, task, (fn.__doc__ or "").strip()))
        return fn

    return deco


def register_loader(
    name: str, fetch: Callable[[Any], Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a dataset loader ``load(path, *, on_bad_rows, ...) -> EventLog``.

    ``fetch(path) -> path`` (optional) downloads the official data to a missing ``path``.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        LOADERS.add(name, DatasetEntry(name, fn, doc, fetch))
        return fn

    return deco


def register_task(
    name: str, *, run: Callable[..., Any], evaluate: Callable[..., Any],
    data_cls: type, train_cls: type, eval_cls: type, doc: str = "",
) -> TaskEntry:
    """Register a task (called once, at the bottom of the module that implements it)."""
    return TASKS.add(name, TaskEntry(name, run, evaluate, data_cls, train_cls, eval_cls, doc))


_loaded = False


def _load_builtins() -> None:
    """Import the modules that register the built-in models, loaders and tasks (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import rankstream.data.loaders  # noqa: F401
    import rankstream.models  # noqa: F401
    import rankstream.train.tasks  # noqa: F401
