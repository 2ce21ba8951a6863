"""Closed-loop HTTP load generator, run as its own process by ``rankstream bench serve``.

``python -m rankstream.serve.loadgen PLAN.json OUT.json``: the plan names the server, the
endpoint, the request bodies to build (users, candidate pools) and the bounds (request count,
time budget). ``concurrency`` threads each keep one persistent HTTP/1.1 connection
(``http.client``) and send the next request as soon as the previous answer is read; every
request's latency (send to last byte read) and status are written to OUT.json. Bodies are
built before the clock starts, so the generator spends its time on the wire, not in JSON.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

MAX_DISTINCT_BODIES = 2000  # bodies are reused round-robin beyond this


def build_bodies(plan: dict[str, Any]) -> list[bytes]:
    """Request bodies: user i % users; ``candidates`` distinct random catalogue items."""
    rng = np.random.default_rng(plan["seed"])
    users = np.asarray(plan["users"], dtype=np.int64)
    items = np.asarray(plan.get("items", []), dtype=np.int64)
    extra = plan.get("extra", {})
    n = min(plan["requests"] + plan.get("warmup", 0), MAX_DISTINCT_BODIES)
    bodies = []
    for i in range(n):
        body: dict[str, Any] = {"user_id": int(users[i % len(users)]), **extra}
        c = plan.get("candidates", 0)
        if c:
            body["candidates"] = items[rng.choice(len(items), size=min(c, len(items)), replace=False)]
        bodies.append(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return bodies


class _Client:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> int:
        """Status of one POST; 0 = connection error (the connection is reopened next time)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request("POST", path, body, self.headers)
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return 0


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then send ``plan['requests']`` requests (or stop at the time budget)."""
    bodies = build_bodies(plan)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    if plan.get("api_key"):
        headers["X-API-Key"] = plan["api_key"]
    host, port, path = plan["host"], int(plan["port"]), plan["path"]
    conc, total, warm = int(plan["concurrency"]), int(plan["requests"]), int(plan.get("warmup", 0))
    clients = [_Client(host, port, headers) for _ in range(conc)]
    for i in range(warm):
        clients[i % conc].post(path, bodies[i % len(bodies)])
    lat = np.zeros(total, dtype=np.float64)
    status = np.zeros(total, dtype=np.int32)
    counter = itertools.count()
    deadline = time.monotonic() + float(plan["time_budget_s"])

    def worker(client: _Client) -> None:
        while True:
            i = next(counter)
            if i >= total or time.monotonic() > deadline:
                return
            body = bodies[(warm + i) % len(bodies)]
            t0 = time.perf_counter()
            status[i] = client.post(path, body)
            lat[i] = (time.perf_counter() - t0) * 1e3

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    done = int(np.count_nonzero(lat))
    return {"latency_ms": lat[:done].tolist(), "status": status[:done].tolist(), "seconds": seconds,
            "requested": total, "completed": done}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plan = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(run(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
