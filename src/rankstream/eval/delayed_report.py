"""The delayed-feedback results in the papers' layout, and the per-segment AUC plot.

CASCADE (TESLA paper, Table 2): one row per method with AUC, PR-AUC, NLL, PCOC for CVR and
NetCVR, then RI-AUC and RI-PRAUC. TRACE (READER paper, Table 4): AUC, ACC, ALPR (+ GAUC).
Input: result JSONs of ``rankstream bench`` with the stream task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rankstream.eval.delayed import plot_segment_auc

CASCADE_ORDER = ("pretrained", "oracle", "vanilla", "fnw", "fnc", "esdfm", "defer", "defuse", "tesla")
TRACE_ORDER = ("pretrained_gmv", "oracle_gmv", "online_single", "reader")
NAMES = {"pretrained": "Pre-trained", "oracle": "Oracle", "vanilla": "Vanilla", "fnw": "FNW", "fnc": "FNC",
         "esdfm": "ES-DFM", "defer": "DEFER", "defuse": "DEFUSE", "tesla": "TESLA", "pretrained_gmv": "Pre-Single",
         "oracle_gmv": "Oracle-Single", "online_single": "Online-Single", "reader": "READER"}


def load(paths: list[Path]) -> list[dict[str, Any]]:
    files = [f for p in paths for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    out = [json.loads(f.read_text()) for f in files]
    return [r for r in out if r.get("task") == "stream" and "method" in r]


def _f(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2f}%" if pct else f"{x:.4f}"


def cascade_table(results: list[dict[str, Any]]) -> str:
    rows = sorted(results, key=lambda r: CASCADE_ORDER.index(r["method"]) if r["method"] in CASCADE_ORDER else 99)
    head = ("| method | AUC CVR | AUC NetCVR | PRAUC CVR | PRAUC NetCVR | NLL CVR | NLL NetCVR | PCOC CVR | PCOC NetCVR "
            "| RI-AUC CVR | RI-AUC NetCVR | RI-PRAUC CVR | RI-PRAUC NetCVR | clicks/s |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        c, n = r["metrics"]["cvr"], r["metrics"]["netcvr"]
        cells = [_f(c["auc"]), _f(n["auc"]), _f(c["prauc"]), _f(n["prauc"]), _f(c["nll"]), _f(n["nll"]), _f(c["pcoc"]),
                 _f(n["pcoc"]), _f(c.get("ri_auc"), True), _f(n.get("ri_auc"), True), _f(c.get("ri_prauc"), True),
                 _f(n.get("ri_prauc"), True), f"{r['clicks_per_second']:,.0f}"]
        lines.append(f"| {NAMES.get(r['method'], r['method'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_table(results: list[dict[str, Any]]) -> str:
    rows = sorted(results, key=lambda r: TRACE_ORDER.index(r["method"]) if r["method"] in TRACE_ORDER else 99)
    lines = ["| method | AUC | ACC | ALPR | GAUC | clicks/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        g = r["metrics"]["gmv"]
        lines.append(f"| {NAMES.get(r['method'], r['method'])} | {_f(g['auc'])} | {_f(g['acc'])} | {_f(g['alpr'])} | "
                     f"{_f(g.get('gauc'))} | {r['clicks_per_second']:,.0f} |")
    return "\n".join(lines)


def report(paths: list[Path], out: Path) -> str:
    """Markdown tables (CASCADE and/or TRACE) and ``segment_auc_<dataset>.png`` per data set."""
    results = load(paths)
    if not results:
        raise FileNotFoundError(f"no stream-task result JSONs in {', '.join(map(str, paths))}")
    parts = []
    for dataset in sorted({r["dataset"] for r in results}):
        rs = [r for r in results if r["dataset"] == dataset]
        gmv = "gmv" in rs[0]["metrics"]
        sim = " (SIMULATED data)" if any(r.get("simulated") for r in rs) else ""
        parts.append(f"### {dataset}{sim}\n\n" + (trace_table(rs) if gmv else cascade_table(rs)))
        curves = {NAMES.get(r["method"], r["method"]): r["segment_auc"] for r in rs}
        target = "GMV AUC" if gmv else "NetCVR AUC"
        plot_segment_auc(curves, out / f"segment_auc_{dataset}.png", f"{dataset}{sim}: per-segment {target}")
    text = "\n\n".join(parts) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "delayed_feedback.md").write_text(text)
    return text
