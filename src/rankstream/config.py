"""YAML -> frozen, typed config objects.

Unknown keys are an error that names the key; values are type-checked against the
dataclass annotations; dotted overrides (``train.max_epochs=3``) are applied before the
objects are built. The ``model`` section is typed by the config class its registered model
declares, so a model takes only its own config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it."""


@dataclass(frozen=True)
class DataConfig:
    # (str) loader name: seq_text | movielens
    loader: str = "seq_text"
    # (str) file or folder under the data directory
    path: str = "ml1m_seq/ml-1m.txt.gz"
    # (int) k-core: drop users / items with fewer events, repeated until stable (0 = off)
    min_user_count: int = 0
    min_item_count: int = 0
    # (int) keep only the most recent max_len items of a history
    max_len: int = 200
    # (str) skip: drop malformed rows and report them; error: stop at the first one
    on_bad_rows: Literal["skip", "error"] = "skip"
    # (float|None) keep events with rating >= this (explicit-feedback sources only)
    min_rating: float | None = None
    # (bool) train on every item but the test one (the HSTU repository's protocol): the
    # validation item becomes a training target, so validation metrics are optimistic and
    # are not used to pick a checkpoint: the weights after the last epoch are evaluated
    train_on_valid: bool = False


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 100  # (int) upper bound on epochs
    batch_size: int = 128  # (int) users per optimizer step (global, over all ranks)
    lr: float = 1e-3  # (float) AdamW learning rate
    weight_decay: float = 0.0  # (float) AdamW decoupled weight decay
    warmup_steps: int = 0  # (int) linear warm-up steps
    # (str) after warm-up: constant lr, or cosine decay to 0 at max_epochs (step-based)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # (float) max global grad norm (0 = off)
    seed: int = 42  # (int) seeds every random draw (data order, negatives, dropout)
    num_threads: int = 2  # (int) torch intra-op threads
    device: str = "cpu"  # (str) cpu | cuda | cuda:N | auto (cuda when present); DDP uses NCCL on cuda
    time_budget_s: float = 0.0  # (float) stop after this much training wall time (0 = none)
    patience: int = 10  # (int) early stopping: evaluations without a better valid metric
    eval_every: int = 1  # (int) evaluate on validation every N epochs
    early_stop_metric: str = "ndcg@10"  # (str) validation metric that picks the best epoch
    loss: Literal["sampled_softmax", "full_softmax"] = "sampled_softmax"
    num_negatives: int = 128  # (int) sampled-softmax negatives per position
    shared_negatives: bool = False  # (bool) one negative set per batch instead of per position
    temperature: float = 0.05  # (float) logit temperature (1.0 = raw dot products)
    # (bool) train on every max_len window of a long history instead of only the most recent
    # one (histories longer than data.max_len otherwise contribute only their last window)
    all_windows: bool = False
    checkpoint_dir: str = ""  # (str) where best/last checkpoints go ("" = runs/<name>)
    log_dir: str = ""  # (str) TensorBoard scalars ("" = <checkpoint_dir>/tb)
    resume: bool = False  # (bool) continue from <checkpoint_dir>/last if it exists
    progress: bool = True  # (bool) rich progress bar


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (10, 50, 200)  # (list[int]) cut-offs for HR@K / NDCG@K
    # (bool) remove items the user has already interacted with from the ranking (never the
    # target). false = rank every item (the plain full-ranking protocol).
    mask_history: bool = False
    # (str) what "already interacted with" means when mask_history is true:
    #   full   = the user's whole history (RecBole's convention);
    #   window = the items of the model's input window, i.e. the last data.max_len items (what
    #            the HSTU repository's evaluation does: filter_invalid_ids over past_ids).
    mask_scope: Literal["full", "window"] = "full"
    batch_size: int = 1024  # (int) users per scoring batch


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    dataset: str
    model_name: str
    model: Any  # the registered model's own frozen config dataclass
    # The next three are typed by the model's task (registry.TaskEntry.data_cls, ...); the
    # defaults are the sequential (next-item) task's.
    data: Any = field(default_factory=DataConfig)
    train: Any = field(default_factory=TrainConfig)
    eval: Any = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = {"name": self.model_name, **out["model"]}
        del out["model_name"]
        return out

    def hash(self, sections: tuple[str, ...] = ("dataset", "model", "data", "train", "eval")) -> str:
        d = self.to_dict()
        payload = json.dumps({k: d[k] for k in sections}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def build(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build frozen dataclass ``cls`` from a mapping; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in names:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (valid: {', '.join(sorted(names))})"
            )
    kwargs = {
        k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested mapping."""
    out = json.loads(json.dumps(raw, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(text) if text != "" else ""
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config, apply overrides, and build the typed objects.

    ``name`` and ``dataset`` default to the file's stem and folder (configs/<dataset>/<name>.yaml).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    raw = apply_overrides(raw, overrides or [])
    raw.setdefault("name", p.stem)
    raw.setdefault("dataset", p.parent.name)
    return config_from_dict(raw, str(p))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Build the typed config from a mapping: a loaded YAML or a ``to_dict()`` (state.json)."""
    from rankstream.registry import MODELS, TASKS

    allowed = {"name", "dataset", "model", "data", "train", "eval"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"unknown config key '{key}' (valid: {', '.join(sorted(allowed))})")
    model_raw = dict(raw.get("model") or {})
    model_name = model_raw.pop("name", None)
    if not model_name:
        raise ConfigError(f"{source}: model.name is required (known: {', '.join(MODELS.names())})")
    entry = MODELS.get(model_name)
    task = TASKS.get(entry.task)
    return ExperimentConfig(
        name=str(raw.get("name") or model_name),
        dataset=str(raw.get("dataset") or ""),
        model_name=model_name,
        model=build(entry.config_cls, model_raw, "model"),
        data=build(task.data_cls, raw.get("data") or {}, "data"),
        train=build(task.train_cls, raw.get("train") or {}, "train"),
        eval=build(task.eval_cls, raw.get("eval") or {}, "eval"),
    )
