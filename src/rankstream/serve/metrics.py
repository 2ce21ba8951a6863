"""Prometheus metrics of one server, plus the ASGI middleware that records them.

Exposed at ``GET /metrics`` (Prometheus text format): ``rankstream_requests_total{endpoint,
status}``, the ``rankstream_request_latency_seconds{endpoint}`` histogram, user-state cache
lookups ``rankstream_cache_lookups_total{cache,result}`` with result hit (cached state),
pending (waited for a ``prepare`` still running), miss (computed on the request) or cold_start,
``rankstream_cache_hit_ratio{cache}`` = (hit + pending) / (hit + pending + miss),
``rankstream_model_swaps_total{result}`` and ``rankstream_model_info{version}``.
The middleware is plain ASGI (no per-request task or copy) and also enforces the body limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CACHE_RESULTS = ("hit", "pending", "miss", "cold_start")


class ServeMetrics:
    """A private registry (several servers can live in one test process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rankstream_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("rankstream_request_latency_seconds", "Server-side request latency",
                                 ["endpoint"], buckets=BUCKETS, registry=r)
        self.cache = Counter("rankstream_cache_lookups", "User-state cache lookups", ["cache", "result"], registry=r)
        self.hit_ratio = Gauge("rankstream_cache_hit_ratio", "(hit + pending) / lookups", ["cache"], registry=r)
        self.swaps = Counter("rankstream_model_swaps", "Model version loads", ["result"], registry=r)
        self.model = Gauge("rankstream_model_info", "The served model version (value 1)", ["version"], registry=r)
        self._counts = dict.fromkeys(CACHE_RESULTS, 0)
        self._hits = {res: self.cache.labels("user_state", res) for res in CACHE_RESULTS}
        self.hit_ratio.labels("user_state").set_function(self.user_hit_ratio)

    def user_lookup(self, result: str) -> None:
        self._counts[result] += 1
        self._hits[result].inc()

    def user_hit_ratio(self) -> float:
        c = self._counts
        total = c["hit"] + c["pending"] + c["miss"]
        return (c["hit"] + c["pending"]) / total if total else 0.0

    def set_version(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version).set(1)

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out


async def _plain(send: Send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            return


class Instrument:
    """ASGI middleware: request counts and latency per endpoint, the server's own time in a
    ``Server-Timing: app;dur=<ms>`` header, and 400/413/415 for bad bodies."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: set[str], max_body: int) -> None:
        self.app, self.metrics, self.routes, self.max_body = app, metrics, routes, max_body
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labelled series, looked up once

    def _record(self, endpoint: str, status: int, seconds: float) -> None:
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = (
                self.metrics.requests.labels(endpoint, str(status)), self.metrics.latency.labels(endpoint))
        child[0].inc()
        child[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in self.routes else "other"
        status = [500]

        async def send_(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                dur = f"app;dur={(time.perf_counter() - t0) * 1e3:.3f}".encode()
                msg["headers"] = [*msg.get("headers", []), (b"server-timing", dur)]
            await send(msg)

        try:
            checked = await self._limit(scope, receive, send_)
            if checked is not None:
                await self.app(scope, checked, send_)
        finally:
            self._record(endpoint, status[0], time.perf_counter() - t0)

    async def _limit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The receive to use, or None after answering 400/413/415 for a bad or oversized body."""
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type")
        if scope["method"] in ("POST", "PUT", "PATCH") and ctype is not None and b"json" not in ctype.lower():
            await _plain(send, 415, "Content-Type must be application/json")
            return None
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _plain(send, 400, "bad Content-Length")
                return None
            if int(length) > self.max_body:
                if int(length) <= 16 * self.max_body:  # read it first, so the client sees the 413
                    await _drain(receive)
                await _plain(send, 413, f"request body over {self.max_body} bytes")
                return None
            return receive
        if scope["method"] in ("GET", "HEAD"):
            return receive
        chunks: list[bytes] = []  # chunked upload: read it all, within the limit
        size, more = 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return None
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_body:
                await _plain(send, 413, f"request body over {self.max_body} bytes")
                return None
        body = b"".join(chunks)
        sent = [False]

        async def replay() -> Message:
            if sent[0]:
                return await receive()
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay
