"""``rankstream sweep``: one config key over a list of values, NDCG@10 and latency plotted.

Two modes. ``train`` runs a full ``bench`` per value (each with the config's own budget),
e.g. PLR's width ``model.num_streams``, which changes the parameters. ``infer`` trains once
with the config as given and evaluates that one checkpoint at each value of an
inference-time key, e.g. LARES's ``model.reasoning_steps`` (test-time depth scaling: the
weights do not depend on it). Writes one result JSON per run, ``sweep.json`` (the points) and
``sweep.png`` (test NDCG@10 and per-user latency against the value) under ``--out``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.console import Console

from rankstream.config import ConfigError, ExperimentConfig, load_config
from rankstream.train.distributed import init_from_env, shutdown
from rankstream.train.experiment import run_experiment

Mode = Literal["train", "infer"]


def parse_values(text: str) -> list[Any]:
    values = [yaml.safe_load(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--values '{text}' holds no value")
    return values


def _point(value: Any, r: dict[str, Any]) -> dict[str, Any]:
    test, valid = r["metrics"]["test"], r["metrics"]["valid"]
    return {"value": value, "test_ndcg@10": test.get("ndcg@10"), "test_hr@10": test.get("hr@10"),
            "valid_ndcg@10": valid.get("ndcg@10"), "latency_ms_per_user": r.get("latency_ms_per_user"),
            "params": r.get("params"), "train_seconds": r.get("train_seconds")}


def _write(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _cfg(config: Path, overrides: list[str], extra: list[str]) -> ExperimentConfig:
    return load_config(config, [*overrides, *extra])


def sweep(config: Path, data_dir: Path, param: str, values: list[Any], out: Path,
          overrides: list[str], mode: Mode, console: Console,
          from_checkpoint: Path | None = None) -> dict[str, Any]:
    """Run the sweep; returns the summary written to ``out/sweep.json``.

    ``from_checkpoint`` (infer mode): evaluate an existing checkpoint, trained with this config
    and overrides, instead of training one.
    """
    from rankstream.train.sequential import evaluate_variant

    slug = param.split(".")[-1]
    points: list[dict[str, Any]] = []
    d = init_from_env()
    try:
        if mode == "train":
            for v in values:
                cfg = _cfg(config, overrides, [f"{param}={v}", f"train.checkpoint_dir={out}/ckpt/{slug}={v}"])
                r = run_experiment(cfg, data_dir, d, console)
                if r is not None:
                    _write(r, out / f"{slug}={v}.json")
                    points.append(_point(v, r))
        else:
            trained = _cfg(config, overrides, [f"train.checkpoint_dir={out}/ckpt/trained"])
            if from_checkpoint is None:
                r = run_experiment(trained, data_dir, d, console)
                if r is not None:
                    _write(r, out / "trained.json")
                    from_checkpoint = Path(r["checkpoint"])
            if from_checkpoint is not None:
                for v in values:
                    cfg = _cfg(config, overrides, [f"{param}={v}"])
                    rv = evaluate_variant(cfg, data_dir, from_checkpoint, trained)
                    _write(rv, out / f"{slug}={v}.json")
                    points.append(_point(v, rv))
    finally:
        shutdown(d)
    summary = {"config": str(config), "param": param, "mode": mode, "overrides": overrides, "points": points}
    if points:
        _write(summary, out / "sweep.json")
        plot_sweep(summary, out / "sweep.png")
    return summary


def plot_sweep(summary: dict[str, Any], path: Path) -> None:
    """Two panels: test NDCG@10 and per-user latency against the swept value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = summary["points"]
    xs = [p["value"] for p in pts]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate((("test_ndcg@10", "test NDCG@10"), ("latency_ms_per_user", "ms per user"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(xs, [p[key] for p in pts], marker="o")
        ax.set_xlabel(summary["param"])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(summary['config']).parent.name}/{Path(summary['config']).stem}: {summary['param']} ({summary['mode']})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
