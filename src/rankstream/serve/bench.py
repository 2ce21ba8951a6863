"""``rankstream bench serve``: load-test the real server, AIF path against the naive path.

1. start ``rankstream serve CKPT`` as a subprocess on a free loopback port and wait for /health;
2. AIF warm-up, off the clock of the ranking phase: one ``/v1/users/prepare`` (wait=true) per
   benchmark user, i.e. the user side that AIF runs while retrieval is still going (its
   latency is reported as ``aif_prepare``); the item side was computed when the model loaded;
3. AIF and naive phases, interleaved in ``rounds`` (AIF, naive, AIF, naive, ...) so that both
   paths see the same machine (a shared VM drifts between minutes): ``requests`` ``/v1/rank``
   calls per path in all (``candidates`` random catalogue items each, users cycling through
   the warmed set), from a separate load-generating process (``serve/loadgen.py``) with
   ``concurrency`` persistent connections, after ``warmup`` untimed calls per phase; the
   naive phase sends ``mode=naive`` (history encoded and item vectors computed on every
   request);
5. percentiles (end to end, as the client sees them; and ``server_side``, the server's own
   time from its Server-Timing header), throughput, status counts and the server's metrics.
Every phase is bounded by a request count and a time budget.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from rankstream.serve.server import ServeOptions


@dataclass(frozen=True)
class BenchOptions:
    candidates: int = 1000
    requests: int = 10000  # timed requests per path
    concurrency: int = 1
    users: int = 1000
    time_budget_s: float = 300.0  # per timed phase
    warmup: int = 200
    rounds: int = 5  # AIF / naive phases alternate this many times
    seed: int = 0
    server: ServeOptions = field(default_factory=ServeOptions)

    def __post_init__(self) -> None:
        for name in ("candidates", "requests", "concurrency", "users", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench serve: --{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.time_budget_s <= 0:
            raise ValueError("bench serve: --warmup must be >= 0 and --time-budget-s > 0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_cmd(ckpt: Path, o: ServeOptions, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "rankstream.cli", "serve", str(ckpt), "--host", o.host, "--port", str(port),
           "--runtime", o.runtime, "--threads", str(o.threads), "--user-ttl-s", str(o.user_ttl_s)]
    if o.data_dir is not None:
        cmd += ["--data-dir", str(o.data_dir)]
    if o.redis_url:
        cmd += ["--redis-url", o.redis_url]
    return cmd


def _get(url: str, api_key: str | None, timeout: float = 5.0) -> bytes:
    req = urllib.request.Request(url, headers={"X-API-Key": api_key} if api_key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body: bytes = r.read()
        return body


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Poll /health until the server answers; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the server exited with status {proc.returncode}: {err.strip()[-2000:]}")
        try:
            health: dict[str, Any] = json.loads(_get(f"{base}/health", None, 1.0))
            return health
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer {base}/health within {timeout:.0f} s")


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    lat = np.asarray(raw["latency_ms"], dtype=np.float64)
    status = np.asarray(raw["status"], dtype=np.int64)
    ok = status // 100 == 2
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if len(lat) else (lambda q: float("nan"))
    codes, counts = np.unique(status, return_counts=True)
    srv = np.asarray(raw.get("server_ms", []), dtype=np.float64)
    srv = srv[np.isfinite(srv)]
    server = {f"p{q}_ms": round(float(np.percentile(srv, q)), 3) for q in (50, 95, 99)} if len(srv) else {}
    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": round(float(lat.max()), 3) if len(lat) else None,
            "server_side": server,
            "mean_ms": round(float(lat.mean()), 3) if len(lat) else None,
            "rps": round(float(ok.sum()) / max(raw["seconds"], 1e-9), 1), "requests": int(len(lat)),
            "requested": raw["requested"], "seconds": round(raw["seconds"], 3),
            "connections": raw.get("connections"),  # TCP connects (= concurrency when keep-alive held)
            "status_counts": {str(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}}


def merge_phases(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One load-generator result from several rounds of the same path."""
    out: dict[str, Any] = {key: [x for p in parts for x in p[key]] for key in ("latency_ms", "server_ms", "status")}
    for key in ("seconds", "requested", "completed", "connections"):
        out[key] = sum(p.get(key) or 0 for p in parts)
    return out


def _phase(plan: dict[str, Any], work: Path, name: str, budget_s: float) -> dict[str, Any]:
    """Run the load generator in its own process for one phase."""
    plan_path, out_path = work / f"{name}.plan.json", work / f"{name}.out.json"
    plan_path.write_text(json.dumps(plan))
    cmd = [sys.executable, "-m", "rankstream.serve.loadgen", str(plan_path), str(out_path)]
    subprocess.run(cmd, check=True, timeout=budget_s + 120, env=os.environ.copy())
    raw: dict[str, Any] = json.loads(out_path.read_text())
    return raw


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def run_bench(checkpoint: Path, opts: BenchOptions, console: Console) -> dict[str, Any]:
    from rankstream.serve.versions import checkpoint_folder, load_data

    data = load_data(checkpoint_folder(checkpoint), opts.server.data_dir)
    rng = np.random.default_rng(opts.seed)
    users = data.user_ids[rng.choice(data.num_users, size=min(opts.users, data.num_users), replace=False)]
    port = opts.server.port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ.copy()
    proc = subprocess.Popen(_server_cmd(checkpoint, opts.server, port), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        health = wait_healthy(base, proc, 300.0)
        console.print(f"server up: {health['model_version']} on {base}")
        common = {"host": "127.0.0.1", "port": port, "api_key": opts.server.api_key, "seed": opts.seed,
                  "users": users.tolist(), "concurrency": opts.concurrency}
        items = data.item_ids[1:].tolist()
        with tempfile.TemporaryDirectory(prefix="rankstream-bench-") as tmp:
            work = Path(tmp)
            prep = _phase({**common, "path": "/v1/users/prepare", "requests": len(users), "warmup": 0,
                           "time_budget_s": opts.time_budget_s, "extra": {"wait": True}}, work, "prepare",
                          opts.time_budget_s)
            raws = {"aif_prepare": prep}
            rounds = min(opts.rounds, opts.requests)
            console.print(f"aif / naive: {opts.requests} requests each x {opts.candidates} candidates, "
                          f"concurrency {opts.concurrency}, {rounds} alternating rounds")
            parts: dict[str, list[dict[str, Any]]] = {"aif": [], "naive": []}
            for r in range(rounds):
                n = opts.requests // rounds + (r < opts.requests % rounds)
                for name in ("aif", "naive"):
                    parts[name].append(_phase(
                        {**common, "seed": opts.seed + r, "path": "/v1/rank", "requests": n, "warmup": opts.warmup,
                         "candidates": opts.candidates, "items": items, "extra": {"mode": name, "k": 10},
                         "time_budget_s": opts.time_budget_s / rounds}, work, f"{name}{r}", opts.time_budget_s))
            raws.update({name: merge_phases(p) for name, p in parts.items()})
        metrics_text = _get(f"{base}/metrics", opts.server.api_key).decode()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return _result(checkpoint, opts, health, raws, metrics_text)


def _result(checkpoint: Path, opts: BenchOptions, health: dict[str, Any], raws: dict[str, dict[str, Any]],
            metrics_text: str) -> dict[str, Any]:
    phases = {name: summarize(raw) for name, raw in raws.items()}
    statuses = np.concatenate([np.asarray(r["status"], dtype=np.int64) for r in raws.values()])
    aif, naive = phases["aif"], phases["naive"]
    return {
        "benchmark": "serve", "checkpoint": str(checkpoint), "model_version": health["model_version"],
        "runtime": opts.server.runtime, "candidates": opts.candidates, "requests_per_path": opts.requests,
        "concurrency": opts.concurrency, "users": opts.users, "server_threads": opts.server.threads,
        "aif": aif, "naive": naive, "aif_prepare": phases["aif_prepare"],
        "speedup": {q: round(naive[f"{q}_ms"] / aif[f"{q}_ms"], 2) if aif[f"{q}_ms"] else None for q in ("p50", "p95", "p99")},
        "errors_5xx": int(((statuses >= 500) & (statuses < 600)).sum()),
        "errors_4xx": int(((statuses >= 400) & (statuses < 500)).sum()),
        "errors_connection": int((statuses == 0).sum()),
        "server": {"user_cache_hit_ratio": _metric(metrics_text, 'rankstream_cache_hit_ratio{cache="user_state"}')},
        "options": {k: v for k, v in asdict(opts).items() if k != "server"},
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
