"""Build the service for a checkpoint and run it under uvicorn (``rankstream serve``)."""

from __future__ import annotations

import gc
import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rankstream.runtime import configure_cpu
from rankstream.serve.cache import (
    ItemTables,
    LocalItemTables,
    LocalUserCache,
    RedisItemTables,
    RedisUserCache,
    UserCache,
    redis_client,
)
from rankstream.serve.export import Runtime
from rankstream.serve.metrics import ServeMetrics
from rankstream.serve.service import RankingService
from rankstream.serve.versions import load_version
from rankstream.train.checkpoint import CheckpointError

log = logging.getLogger("rankstream.serve")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"  # loopback only unless asked
    port: int = 8000
    api_key: str | None = None  # X-API-Key required on every endpoint but /health when set
    data_dir: Path | None = None  # where the checkpoint's data is (else $RANKSTREAM_DATA, recorded source, ./data)
    runtime: Runtime = "torch"  # user-side encoder: torch | onnx | torch_export
    threads: int = 1  # torch / ONNX Runtime intra-op threads
    user_ttl_s: float = 300.0  # user-state cache TTL
    max_cached_users: int = 100_000  # in-process cache bound (LRU)
    redis_url: str | None = None  # redis://host:port/db: shared user-state and item caches


def build_service(checkpoint: Path, opts: ServeOptions) -> RankingService:
    """Load the checkpoint with the chosen runtime and caches (CheckpointError if refused)."""
    logging.getLogger("faiss").setLevel(logging.WARNING)
    configure_cpu(opts.threads)
    users: UserCache
    tables: ItemTables
    if opts.redis_url:
        try:
            client = redis_client(opts.redis_url)
        except Exception as e:  # connection refused, bad URL, ...
            raise CheckpointError(f"cannot use Redis at {opts.redis_url}: {e}") from None
        users, tables = RedisUserCache(client, opts.user_ttl_s), RedisItemTables(client)
    else:
        users, tables = LocalUserCache(opts.user_ttl_s, opts.max_cached_users), LocalItemTables()
    export_dir = Path(tempfile.mkdtemp(prefix="rankstream-serve-"))
    loader = partial(load_version, data_dir=opts.data_dir, runtime=opts.runtime, threads=opts.threads,
                     export_dir=export_dir, tables=tables)
    return RankingService(loader(checkpoint), users, ServeMetrics(), loader)


def run_server(checkpoint: Path, opts: ServeOptions) -> None:
    """Serve until stopped (Ctrl-C / SIGTERM)."""
    import uvicorn

    from rankstream.serve.app import create_app

    service = build_service(checkpoint, opts)
    app = create_app(service, opts.api_key)
    gc.collect()
    gc.freeze()  # the model, data and libraries are long-lived: keep them out of every GC pass
    v = service.current
    log.info("serving %s (%s runtime, %d items, %d users) on http://%s:%d", v.version, opts.runtime,
             v.store.num_items, v.store.num_users, opts.host, opts.port)
    config = uvicorn.Config(app, host=opts.host, port=opts.port, access_log=False, log_level="warning",
                            loop="auto", http="auto", timeout_keep_alive=60)
    try:
        uvicorn.Server(config).run()
    finally:
        service.close()
