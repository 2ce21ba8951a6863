"""Closed-loop HTTP load generator, run as its own process by ``rankstream bench serve``.

``python -m rankstream.serve.loadgen PLAN.json OUT.json``: the plan names the server, the
endpoint, the request bodies to build (users, candidate pools) and the bounds (request count,
time budget). ``concurrency`` threads each keep one persistent HTTP/1.1 connection
(a socket; responses parsed by httptools) and send the next request as soon as the previous answer is read; every
request's latency (send to last byte read), status and the server's own time (its
``Server-Timing`` header) are written to OUT.json. Bodies are
built before the clock starts, so the generator spends its time on the wire, not in JSON.
"""

from __future__ import annotations

import gc
import itertools
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httptools
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
    """One keep-alive HTTP/1.1 connection: a prebuilt request out, the answer parsed by
    httptools (llhttp, the parser uvicorn uses), so the generator adds little to each latency."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None
        self.connects = 0  # TCP connections opened (1 per client when keep-alive holds)
        self.server_ms = float("nan")  # the server's own time (Server-Timing header)

    def on_message_complete(self) -> None:  # httptools callbacks
        # llhttp answers should_keep_alive() only until the message is done (False after it)
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()
        self.complete = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing" and value.startswith(b"app;dur="):
            self.server_ms = float(value[8:])

    def send(self, request: bytes) -> int:
        """Status of one request; 0 = connection error (reconnects on the next call)."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection((self.host, self.port), timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connects += 1
            self.sock.sendall(request)
            parser = self.parser = httptools.HttpResponseParser(self)
            self.complete, self.keep_alive, self.server_ms = False, False, float("nan")
            while not self.complete:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                parser.feed_data(data)
            status: int = parser.get_status_code()
            if not self.keep_alive:
                self.close()
            return status
        except (OSError, httptools.HttpParserError):
            self.close()
            return 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def http_request(host: str, port: int, path: str, body: bytes, api_key: str | None) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: keep-alive"]
    if api_key:
        head.append(f"X-API-Key: {api_key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then send ``plan['requests']`` requests (or stop at the time budget)."""
    host, port, path = plan["host"], int(plan["port"]), plan["path"]
    requests = [http_request(host, port, path, b, plan.get("api_key")) for b in build_bodies(plan)]
    conc, total, warm = int(plan["concurrency"]), int(plan["requests"]), int(plan.get("warmup", 0))
    clients = [_Client(host, port) for _ in range(conc)]
    for i in range(warm):
        clients[i % conc].send(requests[i % len(requests)])
    lat = np.zeros(total, dtype=np.float64)
    server = np.full(total, np.nan, dtype=np.float64)
    status = np.zeros(total, dtype=np.int32)
    counter = itertools.count()
    deadline = time.monotonic() + float(plan["time_budget_s"])

    def worker(client: _Client) -> None:
        while True:
            i = next(counter)
            if i >= total or time.monotonic() > deadline:
                return
            request = requests[(warm + i) % len(requests)]
            t0 = time.perf_counter()
            status[i] = client.send(request)
            lat[i] = (time.perf_counter() - t0) * 1e3
            server[i] = client.server_ms

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    gc.collect()
    gc.disable()  # no collector pauses inside the measured requests (the loop allocates little)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    gc.enable()
    for c in clients:
        c.close()
    done = int(np.count_nonzero(lat))
    return {"latency_ms": lat[:done].tolist(), "server_ms": server[:done].tolist(),
            "status": status[:done].tolist(), "seconds": seconds,
            "requested": total, "completed": done, "connections": sum(c.connects for c in clients)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plan = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(run(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
