"""Benchmark report: a Markdown table and PNG plots from `rankstream bench` result files.

Result files are JSON objects with at least ``dataset`` and ``model``. Retrieval results carry
``metrics.test`` with hr/ndcg/mrr, ranking results auc/gauc/logloss; other shapes (e.g. streaming
``metrics.cvr``) are shown by their scalar top-level fields only, with blank metric columns.
Plots use matplotlib's Agg canvas directly, never pyplot, so no global backend state changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

PREFERRED_METRICS = ("ndcg@10", "hr@10", "mrr")
CURVES_PNG = "training_curves.png"
BARS_PNG = "test_metrics.png"
_FIXED_HEAD = ["dataset", "model", "protocol"]
_FIXED_TAIL = ["epochs (best)", "s/epoch", "eval s", "params"]


class ReportError(ValueError):
    """A result file that cannot be read as a benchmark result."""


# ----------------------------------------------------------------------------- loading


def _expand(path: Path) -> list[Path]:
    """The JSON files named by one path: the file itself or all ``*.json`` under a folder."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise ReportError(f"{path}: folder holds no *.json result files")
        return files
    if not path.is_file():
        raise ReportError(f"{path}: no such file or folder")
    return [path]


def _load_one(path: Path) -> dict[str, Any]:
    """Parse and check one result file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from None
    if not isinstance(obj, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("model", "dataset") if obj.get(k) in (None, "")]
    if missing:
        raise ReportError(f"{path}: not a result file, missing {', '.join(missing)!s}")
    return obj


def load_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Load result dicts from JSON files and folders (searched recursively, sorted)."""
    return [_load_one(f) for p in paths for f in _expand(Path(p))]


# ----------------------------------------------------------------------------- table


def _mapping(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _test_metrics(r: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(r.get("metrics")).get("test"))


def _order_metrics(keys: set[str]) -> list[str]:
    """Preferred metrics first (ndcg@10, hr@10, mrr), then the rest sorted."""
    head = [k for k in PREFERRED_METRICS if k in keys]
    return head + sorted(keys - set(head))


def metric_columns(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the numeric keys under ``metrics.test`` over all results, in display order."""
    keys = {k for r in results for k, v in _test_metrics(r).items() if _is_num(v)}
    return _order_metrics(keys)


def protocol_short(protocol: Any) -> str:
    """Short protocol text, e.g. ``LOO full, no mask, L=200``."""
    p = _mapping(protocol)
    split = {"leave-one-out": "LOO"}.get(str(p.get("split")), p.get("split"))
    first = " ".join(str(x) for x in (split, p.get("ranking")) if x not in (None, ""))
    parts = [first] if first else []
    if isinstance(p.get("mask_history"), bool):
        scope = f" ({p['mask_scope']})" if p["mask_history"] and p.get("mask_scope") else ""
        parts.append(f"mask{scope}" if p["mask_history"] else "no mask")
    if p.get("max_len") is not None:
        parts.append(f"L={p['max_len']}")
    return ", ".join(parts)


def _fmt_seconds(x: Any) -> str:
    if not _is_num(x):
        return ""
    return f"{x:.1f}" if abs(x) >= 1 or x == 0 else f"{x:.2g}"


def _fmt_epochs(r: Mapping[str, Any]) -> str:
    epochs, best = r.get("epochs"), r.get("best_epoch")
    if epochs is None:
        return "" if best is None else f"({best})"
    return f"{epochs}" if best is None else f"{epochs} ({best})"


def _s_per_epoch(r: Mapping[str, Any]) -> Any:
    s = r.get("train_seconds_per_epoch")
    if s is None and _is_num(r.get("train_seconds")) and _is_num(r.get("epochs")) and r["epochs"]:
        s = r["train_seconds"] / r["epochs"]
    return s


def _model_name(r: Mapping[str, Any]) -> str:
    """The model, plus the run name when it differs from the model."""
    name = r.get("name")
    return f"{r.get('model')}" + (f" ({name})" if name not in (None, "", r.get("model")) else "")


def run_label(r: Mapping[str, Any]) -> str:
    """``dataset/model`` (with the run name when it differs), as used in plot legends."""
    return f"{r.get('dataset')}/{_model_name(r)}"


def _sorted(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(results, key=lambda r: (str(r.get("dataset")), str(r.get("model")),
                                          str(r.get("name") or "")))


def table_rows(results: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (sorted by dataset, then model) shared by Markdown and rich."""
    metrics = metric_columns(results)
    rows = []
    for r in _sorted(results):
        test = _test_metrics(r)
        params = r.get("params")
        rows.append([
            str(r.get("dataset")), _model_name(r), protocol_short(r.get("protocol")),
            *[f"{test[m]:.4f}" if _is_num(test.get(m)) else "" for m in metrics],
            _fmt_epochs(r), _fmt_seconds(_s_per_epoch(r)), _fmt_seconds(r.get("eval_seconds")),
            f"{params:,}" if _is_num(params) else "",
        ])
    return _FIXED_HEAD + metrics + _FIXED_TAIL, rows


def markdown_table(results: list[dict[str, Any]]) -> str:
    """A GitHub Markdown table, one row per result."""
    header, rows = table_rows(results)
    n_head = len(_FIXED_HEAD)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = [":---"] * n_head + ["---:"] * (len(header) - n_head)
    return "\n".join([line(header), line(align), *map(line, rows)]) + "\n"


def print_table(results: list[dict[str, Any]], console: Console | None = None) -> None:
    """Print the results table with rich."""
    from rich.table import Table

    header, rows = table_rows(results)
    table = Table(title="rankstream results")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < len(_FIXED_HEAD) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if console is None:  # own console: widen it to the table, a squeezed table is unreadable
        console = Console()
        natural = console.measure(table, options=console.options.update_width(10_000)).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


# ----------------------------------------------------------------------------- plots


def _history(r: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    h = r.get("history")
    return [e for e in h if isinstance(e, Mapping)] if isinstance(h, list) else []


_Getter = Callable[[Mapping[str, Any]], Any]


def _series(r: Mapping[str, Any], get: _Getter) -> tuple[list[float], list[float]]:
    """(epochs, values) over a run's history for entries where ``get`` gives a number."""
    xs, ys = [], []
    for i, e in enumerate(_history(r)):
        v = get(e)
        if _is_num(v) and not math.isnan(v):
            xs.append(float(e["epoch"]) if _is_num(e.get("epoch")) else float(i + 1))
            ys.append(float(v))
    return xs, ys


def _valid_metric(results: Sequence[Mapping[str, Any]]) -> str | None:
    """ndcg@10 if any run's history has it, else the first validation metric available."""
    keys = {k for r in results for e in _history(r) for k, v in _mapping(e.get("valid")).items()
            if _is_num(v)}
    order = _order_metrics(keys)
    return order[0] if order else None


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def plot_training_curves(results: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Loss and validation metric per epoch, one line per run; False (no file) if no data."""
    metric = _valid_metric(results)
    getters: list[tuple[str, _Getter]] = [
        ("training loss", lambda e: e.get("loss")),
        (f"valid {metric}", lambda e: _mapping(e.get("valid")).get(metric or "")),
    ]
    runs = _sorted(results)
    if not any(_series(r, g)[0] for r in runs for _, g in getters):
        return False
    fig, axes = _new_figure(11, 4.2, ncols=2)
    for ax, (title, get) in zip(axes, getters, strict=True):
        for r in runs:
            xs, ys = _series(r, get)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=run_label(r))
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return True


def plot_test_metrics(results: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Grouped bars of test ndcg@10 and hr@10 (else the first two test metrics) per run."""
    metrics = metric_columns(results)[:2]
    runs = [r for r in _sorted(results) if any(_is_num(_test_metrics(r).get(m)) for m in metrics)]
    if not runs:
        return False
    fig, (ax,) = _new_figure(max(6.0, 1.2 * len(runs) + 2), 4.5)
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(runs))]
        vals: list[Any] = [_test_metrics(r).get(m) for r in runs]
        keep = [(x, float(v)) for x, v in zip(xs, vals, strict=True) if _is_num(v)]
        bars = ax.bar([x for x, _ in keep], [v for _, v in keep], width, label=f"test {m}")
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small")
    ax.set_xticks(range(len(runs)), [run_label(r) for r in runs], rotation=30, ha="right")
    ax.set(title="test metrics", ylabel="value")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return True


# ----------------------------------------------------------------------------- report


def write_report(results: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir``; return the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [(CURVES_PNG, "Training curves", plot_training_curves),
             (BARS_PNG, "Test metrics", plot_test_metrics)]
    sections = []
    for fname, title, plot in plots:
        if plot(results, out_dir / fname):
            sections.append(f"## {title}\n\n![{title}]({fname})\n")
        else:
            (out_dir / fname).unlink(missing_ok=True)  # no stale plot from an earlier report
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# rankstream results\n",
        f"Generated by `rankstream report` on {stamp} from {len(results)} result file(s).\n",
        markdown_table(results),
        *sections,
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
