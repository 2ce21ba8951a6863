"""The rankstream command line: the only place that reads argv.

    rankstream list
    rankstream data prepare --config C [--data-dir D] [key=value ...]
    rankstream train        --config C [--data-dir D] [--out R.json] [key=value ...]
    rankstream eval         --config C --checkpoint DIR [--data-dir D] [key=value ...]
    rankstream bench        --config C [--data-dir D] --out R.json [key=value ...]
    rankstream report       RESULT.json|DIR ... [--out DIR]
    rankstream sweep        --config C --param KEY --values V1,V2,.. --out DIR [--mode train|infer] [key=value ...]

Expected errors (bad config, bad data, unknown names, wrong checkpoint) print one line and
exit with status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rankstream.config import ConfigError, load_config
from rankstream.data.schema import DataError
from rankstream.registry import LOADERS, MODELS, TASKS, RegistryError
from rankstream.train.checkpoint import CheckpointError

EXPECTED_ERRORS = (ConfigError, DataError, RegistryError, CheckpointError, FileNotFoundError)
console = Console(stderr=True)


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("RANKSTREAM_DATA") or "data")


def _write_json(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _print_metrics(result: dict[str, Any]) -> None:
    from rich.table import Table

    protocol = result.get("protocol", {}).get("name", "")
    table = Table(title=f"{result['dataset']} / {result['model']}  ({protocol})")
    table.add_column("split")
    keys = list(result["metrics"]["test"])
    for k in keys:
        table.add_column(k, justify="right")
    for split, m in result["metrics"].items():
        table.add_row(split, *[f"{m[k]:.4f}" for k in keys])
    Console().print(table)


def cmd_list(args: argparse.Namespace) -> int:
    for m in MODELS.names():
        e = MODELS.get(m)
        print(f"model   {m:12s} [{e.task}] {e.doc.splitlines()[0] if e.doc else ''}")
    for name in LOADERS.names():
        print(f"loader  {name:12s} {LOADERS.get(name).doc}")
    for name in TASKS.names():
        print(f"task    {name:12s} {TASKS.get(name).doc}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from rankstream.data.prepare import prepare_sequences

    cfg = load_config(args.config, args.overrides)
    data = prepare_sequences(data_dir_of(args), cfg.data)
    print(json.dumps(data.stats, indent=1))
    return 0


def _run(args: argparse.Namespace, out: Path | None) -> int:
    from rankstream.train.distributed import init_from_env, shutdown
    from rankstream.train.experiment import run_experiment

    cfg = load_config(args.config, args.overrides)
    d = init_from_env()
    try:
        result = run_experiment(cfg, data_dir_of(args), d, console)
    finally:
        shutdown(d)
    if result is None:
        return 0
    _print_metrics(result)
    if out is not None:
        _write_json(result, out)
        console.print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    return _run(args, Path(args.out) if args.out else None)


def cmd_bench(args: argparse.Namespace) -> int:
    return _run(args, Path(args.out))


def cmd_eval(args: argparse.Namespace) -> int:
    from rankstream.train.experiment import evaluate_checkpoint

    cfg = load_config(args.config, args.overrides)
    result = evaluate_checkpoint(cfg, data_dir_of(args), Path(args.checkpoint))
    _print_metrics(result)
    if args.out:
        _write_json(result, Path(args.out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rankstream.eval.report import load_results, print_table, write_report

    results = load_results([Path(p) for p in args.results])
    print_table(results)
    path = write_report(results, Path(args.out))
    console.print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from rankstream.train.sweep import parse_values, sweep

    summary = sweep(Path(args.config), data_dir_of(args), args.param, parse_values(args.values),
                    Path(args.out), args.overrides, args.mode, console,
                    Path(args.from_checkpoint) if args.from_checkpoint else None)
    for p in summary["points"]:
        console.print(f"{args.param}={p['value']}: test ndcg@10 {p['test_ndcg@10']:.4f}, "
                      f"{p['latency_ms_per_user']:.2f} ms/user")
    console.print(f"wrote {Path(args.out) / 'sweep.json'} and sweep.png")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rankstream", description="From event log to served score.")
    sub = p.add_subparsers(dest="command", required=True)

    def exp(name: str, fn: Callable[[argparse.Namespace], int], help_: str, sp: Any = sub) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = sp.add_parser(name, help=help_)
        q.add_argument("--config", required=True, help="configs/<dataset>/<model>.yaml")
        q.add_argument("--data-dir", default=None, help="data directory (default: $RANKSTREAM_DATA or ./data)")
        q.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=3")
        q.set_defaults(fn=fn)
        return q

    sub.add_parser("list", help="registered models and loaders").set_defaults(fn=cmd_list)
    data = sub.add_parser("data", help="data preparation").add_subparsers(dest="data_cmd", required=True)
    exp("prepare", cmd_prepare, "load, filter, remap and cache a dataset", data)
    exp("train", cmd_train, "train a model and evaluate its best checkpoint").add_argument("--out", default=None)
    exp("bench", cmd_bench, "train + evaluate and write a result JSON").add_argument("--out", required=True)
    ev = exp("eval", cmd_eval, "evaluate a checkpoint on valid and test")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--out", default=None)
    sw = exp("sweep", cmd_sweep, "train/evaluate over values of one key; plot NDCG@10 and latency")
    sw.add_argument("--param", required=True, help="dotted key, e.g. model.reasoning_steps")
    sw.add_argument("--values", required=True, help="comma-separated values, e.g. 0,1,2,3")
    sw.add_argument("--out", required=True, help="folder for result JSONs, sweep.json, sweep.png")
    sw.add_argument("--mode", choices=["train", "infer"], default="train",
                    help="train: one bench per value; infer: train once, evaluate each value")
    sw.add_argument("--from-checkpoint", default=None,
                    help="infer mode: evaluate this checkpoint (trained with the config) instead of training")
    rep = sub.add_parser("report", help="Markdown table + plots from result JSON files")
    rep.add_argument("results", nargs="+")
    rep.add_argument("--out", default="results/report")
    rep.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except EXPECTED_ERRORS as e:
        print(f"rankstream: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # model/data mismatches raised below the CLI
        print(f"rankstream: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
