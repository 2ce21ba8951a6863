"""The rankstream command line: the only place that reads argv.

    rankstream list
    rankstream data prepare --config C [--data-dir D] [key=value ...]
    rankstream train        --config C [--data-dir D] [--out R.json] [key=value ...]
    rankstream eval         --config C --checkpoint DIR [--data-dir D] [key=value ...]
    rankstream bench        --config C [--data-dir D] --out R.json [key=value ...]
    rankstream report       RESULT.json|DIR ... [--out DIR]
    rankstream serve        CHECKPOINT [--host H] [--port N] [--api-key K] [--runtime R] ...
    rankstream bench serve  --checkpoint CKPT --candidates 1000 --requests 10000 --out OUT.json
    rankstream export       CHECKPOINT --format onnx|torch_export --out DIR
    rankstream data simulate cascade|trace --out DIR [--seed N] [--size N]
    rankstream stream-report RESULT.json|DIR ... [--out DIR]
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
from rankstream.data.simulate import DEFAULT_SIZE, SimParams, write_simulated
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

    if "test" not in result["metrics"]:  # streaming results: one row per target (cvr, netcvr, gmv)
        _print_sections(result)
        return
    protocol = result.get("protocol", {}).get("name", "")
    table = Table(title=f"{result['dataset']} / {result['model']}  ({protocol})")
    table.add_column("split")
    keys = list(result["metrics"]["test"])
    for k in keys:
        table.add_column(k, justify="right")
    for split, m in result["metrics"].items():
        table.add_row(split, *[f"{m[k]:.4f}" for k in keys])
    Console().print(table)


def _print_sections(result: dict[str, Any]) -> None:
    from rich.table import Table

    sim = " SIMULATED data" if result.get("simulated") else ""
    table = Table(title=f"{result['dataset']} / {result.get('method', result['model'])}{sim}")
    table.add_column("target")
    keys = sorted({k for m in result["metrics"].values() for k in m})
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in result["metrics"].items():
        table.add_row(name, *[f"{m[k]:.4f}" if k in m else "" for k in keys])
    Console().print(table)
    if "clicks_per_second" in result:
        Console().print(f"{result['clicks_per_second']:,.0f} clicks/s of training")


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


def _serve_options(args: argparse.Namespace) -> Any:
    from rankstream.serve.server import ServeOptions

    return ServeOptions(
        host=args.host, port=args.port, api_key=args.api_key or os.environ.get("RANKSTREAM_API_KEY") or None,
        data_dir=Path(args.data_dir) if args.data_dir else None, runtime=args.runtime, threads=args.threads,
        user_ttl_s=args.user_ttl_s, redis_url=args.redis_url,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from rankstream.serve.server import run_server

    run_server(Path(args.checkpoint), _serve_options(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rankstream.serve.versions import export_checkpoint

    info = export_checkpoint(Path(args.checkpoint), args.format, Path(args.out),
                             Path(args.data_dir) if args.data_dir else None)
    print(json.dumps(info, indent=1))
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from rankstream.serve.bench import BenchOptions, run_bench

    opts = BenchOptions(
        candidates=args.candidates, requests=args.requests, concurrency=args.concurrency,
        users=args.users, time_budget_s=args.time_budget_s, warmup=args.warmup, rounds=args.rounds, seed=args.seed,
        server=_serve_options(args),
    )
    result = run_bench(Path(args.checkpoint), opts, console)
    _write_json(result, Path(args.out))
    console.print(f"wrote {args.out}")
    return 0


def _server_args(q: argparse.ArgumentParser, port: int) -> None:
    q.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    q.add_argument("--port", type=int, default=port)
    q.add_argument("--api-key", default=None, help="require X-API-Key (or set $RANKSTREAM_API_KEY)")
    q.add_argument("--data-dir", default=None, help="data directory of the checkpoint's dataset "
                   "(default: $RANKSTREAM_DATA, else the path recorded in the checkpoint, else ./data)")
    q.add_argument("--runtime", default="torch", choices=["torch", "onnx", "torch_export"],
                   help="user-side encoder: eager PyTorch, ONNX Runtime or torch.export")
    q.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads in the server")
    q.add_argument("--user-ttl-s", type=float, default=300.0, help="user-state cache TTL (seconds)")
    q.add_argument("--redis-url", default=None, help="redis://host:port/db for shared user/item caches")


def bench_serve_parser() -> argparse.ArgumentParser:
    """`rankstream bench serve ...` (parsed apart so that `bench --config` stays as it is)."""
    q = argparse.ArgumentParser(prog="rankstream bench serve",
                                description="load-test the real server: AIF path vs naive path")
    q.add_argument("--checkpoint", required=True, help="checkpoint folder written by train/bench")
    q.add_argument("--candidates", type=int, default=1000, help="candidates per rank request")
    q.add_argument("--requests", type=int, default=10000, help="timed requests per path")
    q.add_argument("--out", required=True, help="result JSON")
    q.add_argument("--concurrency", type=int, default=1, help="concurrent keep-alive client connections (closed loop)")
    q.add_argument("--users", type=int, default=1000, help="distinct users the requests cycle through")
    q.add_argument("--time-budget-s", type=float, default=300.0, help="upper bound per timed phase")
    q.add_argument("--warmup", type=int, default=200, help="untimed requests before each phase")
    q.add_argument("--rounds", type=int, default=5, help="AIF and naive phases alternate this many times")
    q.add_argument("--seed", type=int, default=0)
    _server_args(q, port=0)
    q.set_defaults(fn=cmd_bench_serve)
    return q


def cmd_simulate(args: argparse.Namespace) -> int:
    path = write_simulated(args.kind, Path(args.out), seed=args.seed, size=args.size,
                           params=SimParams() if args.impulse_logit is None else SimParams(impulse_logit=args.impulse_logit))
    console.print(f"wrote SIMULATED {args.kind} data to {path}")
    return 0


def cmd_stream_report(args: argparse.Namespace) -> int:
    from rankstream.eval.delayed_report import report

    print(report([Path(p) for p in args.results], Path(args.out)))
    console.print(f"wrote {Path(args.out) / 'delayed_feedback.md'} and the per-segment AUC plots")
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
    sim = data.add_parser("simulate", help="write SIMULATED CASCADE- or TRACE-format data (delayed feedback)")
    sim.add_argument("kind", choices=["cascade", "trace"])
    sim.add_argument("--out", required=True, help="folder for cascade_sim.tsv / trace_sim.txt")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--size", type=int, default=0, help=f"clicks (0 = {DEFAULT_SIZE['cascade']:,} for cascade, {DEFAULT_SIZE['trace']:,} for trace)")
    sim.add_argument("--impulse-logit", type=float, default=None,
                     help=f"cascade: intercept of the impulse-buy probability (default {SimParams.impulse_logit}; "
                          "lower = longer conversion delays)")
    sim.set_defaults(fn=cmd_simulate)
    exp("train", cmd_train, "train a model and evaluate its best checkpoint").add_argument("--out", default=None)
    exp("bench", cmd_bench, "train + evaluate and write a result JSON ('bench serve': load-test a server)").add_argument("--out", required=True)
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
    srv = sub.add_parser("serve", help="serve a checkpoint over HTTP until stopped")
    srv.add_argument("checkpoint", help="checkpoint folder (or a run folder holding best/)")
    _server_args(srv, port=8000)
    srv.set_defaults(fn=cmd_serve)
    ex = sub.add_parser("export", help="export a checkpoint's user tower (ONNX / torch.export) with a parity check")
    ex.add_argument("checkpoint")
    ex.add_argument("--format", required=True, choices=["onnx", "torch_export"])
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--data-dir", default=None)
    ex.set_defaults(fn=cmd_export)
    srep = sub.add_parser("stream-report", help="delayed-feedback results in the papers' table layout + AUC plot")
    srep.add_argument("results", nargs="+")
    srep.add_argument("--out", default="results/delayed")
    srep.set_defaults(fn=cmd_stream_report)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "serve"]:
        args = bench_serve_parser().parse_args(argv[2:])
    else:
        p = parser()
        args, extra = p.parse_known_args(argv)
        # key=value overrides may also come after options (``--out X.json train.lr=0.1``)
        if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
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
