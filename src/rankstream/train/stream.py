"""The "stream" task: online continuous training with delayed feedback (CVR, NetCVR, GMV).

Protocol (CASCADE, arXiv 2601.19965 Sec. 5.1; TRACE, arXiv 2601.20307 Sec. 5.1): pre-train on
the complete labels of ``[pretrain_start_day, pretrain_end_day)``; then replay the stream from
``stream_start_day`` in segments of ``segment_s``: train on the samples a method may see in
segment n, evaluate on the clicks of segment n+1 against their TRUE labels, and average each
metric over segments. ``train.method`` picks the method (``train/stream_methods.py``).

Relative improvement (RI-AUC, RI-PRAUC) needs the Pre-trained and the Oracle figures on the same
stream. Pre-trained: the frozen pre-trained ``cascade_cvr`` model is evaluated on every segment
of every run (a forward pass). Oracle: read from ``<reference_dir>/oracle-<key>.json``, written
by any Oracle run of the same stream, protocol, model size and training settings; when absent
(``train.oracle_reference=cache``) the run first streams the Oracle itself and writes it there.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console

from rankstream.config import ConfigError, ExperimentConfig
from rankstream.data.stream.prepare import PreparedStream, StreamDataConfig, prepare_stream
from rankstream.data.stream.source import EventSource, ParquetSource, RedisSource, publish_redis
from rankstream.eval.delayed import mean_over_segments, relative_improvement
from rankstream.registry import register_task
from rankstream.train.distributed import Dist
from rankstream.train.experiment import checkpoint_dir, result_fields
from rankstream.train.loop import FitState
from rankstream.train.stream_loop import StreamProgress, StreamRunner
from rankstream.train.stream_methods import METHODS, MODEL_OF, Context
from rankstream.train.stream_pretrain import pretrained


@dataclass(frozen=True)
class StreamTrainConfig:
    # (str) pretrained | oracle | vanilla | fnw | fnc | esdfm | defer | defuse | tesla (CASCADE);
    # pretrained_gmv | oracle_gmv | online_single | reader (TRACE)
    method: str = "tesla"
    batch_size: int = 2048  # (int) samples per step within a segment (the papers: 5000)
    pretrain_batch_size: int = 2048  # (int) samples per step of the pre-training epochs
    lr: float = 1e-3  # (float) streaming learning rate (AdamW dense, lazy Adam on sparse embeddings)
    weight_decay: float = 0.0  # (float) AdamW weight decay (dense parameters)
    pretrain_epochs: int = 1  # (int) epochs over the pre-training period
    pretrain_lr: float = 1e-3  # (float) pre-training learning rate
    seed: int = 42  # (int) seeds every random draw (segment n draws from (seed, n))
    num_threads: int = 2  # (int) torch intra-op threads
    bpr_negatives_cvr: int = 50  # (int) TESLA: sampled negatives per conversion in the ranking loss
    bpr_negatives_refund: int = 5  # (int) TESLA: sampled negatives per refund
    bpr_weight_refund: float = 0.1  # (float) TESLA: weight of the refund stage's ranking loss (the CVR stage's is 1)
    reader_boost: float = 0.1  # (float) READER: weight of the attribution-back term
    reader_ga: float = 0.5  # (float) READER: weight of "unlearn the previous target" inside it
    checkpoint_dir: str = ""  # (str) stream checkpoints ("" = runs/<dataset>-<name>)
    checkpoint_every_s: float = 600.0  # (float) seconds between checkpoints (0 = after every segment)
    resume: bool = True  # (bool) continue from <checkpoint_dir>/LATEST if present
    max_segments: int = 0  # (int) stop after this many segments (0 = the whole stream)
    oracle_reference: Literal["cache", "none"] = "cache"  # (str) RI: cached Oracle (streamed first if missing) | none
    reference_dir: str = "runs/stream_refs"  # (str) Oracle references and pre-trained models
    progress: bool = True  # (bool) print a line every 100 segments
    # (str) streaming BatchNorm: "frozen" keeps the pre-trained running statistics (each segment's
    # batch, with its duplicated positives and refund rows, is not the click distribution that is
    # scored next: updating them made every duplicate-stream method drift, see docs/benchmarks.md)
    batchnorm: Literal["frozen", "batch"] = "frozen"
    bf16: bool = False  # (bool) bfloat16 autocast of the towers' matmuls (CPUs with AVX512-BF16 / AMX)


@dataclass(frozen=True)
class StreamEvalConfig:
    gauc_field: int = 2  # (int) TRACE: feature field that defines GAUC's groups (-1 = off)


def open_source(prep: PreparedStream, cfg: StreamDataConfig) -> EventSource:
    parquet = ParquetSource(prep.events_path)
    if cfg.source == "parquet":
        return parquet
    key = cfg.redis_key or f"rankstream:events:{prep.digest}"
    publish_redis(parquet.rec, cfg.redis_url, key)
    return RedisSource(cfg.redis_url, key)


def _check(cfg: ExperimentConfig) -> None:
    m = METHODS.get(cfg.train.method)
    if m is None:
        raise ConfigError(f"train.method={cfg.train.method!r} is not one of {', '.join(METHODS)}")
    if cfg.model_name not in MODEL_OF[m.family]:
        raise ConfigError(f"train.method={m.name} needs a {m.family} model ({' or '.join(MODEL_OF[m.family])}), "
                          f"not model.name={cfg.model_name}")
    if (m.name == "tesla") != (cfg.model_name == "tesla") or (m.name == "reader") != (cfg.model_name == "reader"):
        raise ConfigError(f"model.name={cfg.model_name} and train.method={m.name} do not go together")
    for what, lowest in (("training steps (BatchNorm needs two rows)", {"batch_size": 2, "pretrain_batch_size": 2}),
                         ("TESLA's ranking loss", {"bpr_weight_refund": 0, "bpr_negatives_cvr": 1, "bpr_negatives_refund": 1})):
        bad = [f"train.{k}={getattr(cfg.train, k)} (must be >= {low})" for k, low in lowest.items()
               if getattr(cfg.train, k) < low]
        if bad:
            raise ConfigError(f"{what}: {', '.join(bad)}")


def _stream(cfg: ExperimentConfig, prep: PreparedStream, ckpt: Path, console: Console,
            refs: dict[str, torch.nn.Module]) -> tuple[StreamProgress, torch.nn.Module]:
    """Pre-train (cached) and stream one method; returns its progress and trained model."""
    method = METHODS[cfg.train.method]
    folder = Path(cfg.train.reference_dir) / "pretrained"
    helpers = {h: pretrained("base" if h == "pretrained" else h, cfg.model_name, cfg.model, prep, cfg.data, cfg.train,
                             folder, console) for h in method.helpers}
    model = pretrained("base", cfg.model_name, cfg.model, prep, cfg.data, cfg.train, folder, console)
    if method.trains:
        model.requires_grad_(True)
    ctx = Context(method, helpers, torch.Generator(), cfg.data.conv_obs_s / 3600.0, cfg.train.bpr_negatives_cvr,
                  cfg.train.bpr_negatives_refund, cfg.train.reader_boost, cfg.train.reader_ga,
                  bpr_weight_refund=cfg.train.bpr_weight_refund)
    source = open_source(prep, cfg.data)
    try:
        runner = StreamRunner(prep, source, model, ctx, cfg.data, cfg.train, cfg.eval, ckpt, refs, console)
        return runner.run(), model
    finally:
        source.close()


def _reference_key(cfg: ExperimentConfig, prep: PreparedStream) -> str:
    payload: dict[str, Any] = {"digest": prep.digest, "data": asdict(cfg.data), "train": {k: v for k, v in asdict(cfg.train).items()
               if k in ("batch_size", "lr", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "seed", "max_segments", "batchnorm")},
               "model": {k: v for k, v in asdict(cfg.model).items() if k != "shared_embeddings"}}
    for k in ("source", "redis_url", "redis_key"):
        payload["data"].pop(k)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def oracle_reference(cfg: ExperimentConfig, prep: PreparedStream, console: Console) -> dict[str, float] | None:
    """The Oracle's segment-averaged metrics on this stream (cached; streamed first if absent)."""
    if prep.gmv or cfg.train.oracle_reference == "none":
        return None
    path = Path(cfg.train.reference_dir) / f"oracle-{_reference_key(cfg, prep)}.json"
    if not path.is_file():
        console.print(f"no Oracle reference at {path}: streaming the Oracle first")
        ocfg = replace(cfg, model_name="cascade_cvr", model=replace(cfg.model, shared_embeddings=False),
                       train=replace(cfg.train, method="oracle",
                                     checkpoint_dir=str(Path(cfg.train.reference_dir) / f"ckpt-oracle-{_reference_key(cfg, prep)}")))
        progress, _ = _stream(ocfg, prep, checkpoint_dir(ocfg), console, {})
        _write_reference(path, mean_over_segments(progress.rows))
    ref: dict[str, float] = json.loads(path.read_text())["metrics"]
    return ref


def _write_reference(path: Path, metrics: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"metrics": metrics, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    tmp.replace(path)


def _section(avg: dict[str, float], prefix: str, name: str) -> dict[str, float]:
    return {k.split(".", 2)[-1]: round(v, 6) for k, v in avg.items() if k.startswith(f"{prefix}{name}.")}


def summarize(avg: dict[str, float], oracle: dict[str, float] | None, gmv: bool) -> dict[str, Any]:
    """metrics.{cvr,netcvr} with RI against the in-run Pre-trained and the Oracle reference."""
    if gmv:
        return {"gmv": _section(avg, "", "gmv")}
    out: dict[str, Any] = {}
    for name in ("cvr", "netcvr"):
        m = _section(avg, "", name)
        if oracle is not None:
            for metric in ("auc", "prauc"):
                m[f"ri_{metric}"] = round(relative_improvement(avg[f"{name}.{metric}"], avg[f"pretrained.{name}.{metric}"],
                                                               oracle[f"{name}.{metric}"]), 4)
        out[name] = m
    return out


def run(cfg: ExperimentConfig, data_dir: Path, d: Dist, console: Console) -> dict[str, Any] | None:
    """Pre-train, stream ``train.method`` through the data, and describe the result."""
    t_start = time.perf_counter()
    _check(cfg)
    prep = prepare_stream(data_dir, cfg.data)
    gmv = prep.gmv
    if gmv != (METHODS[cfg.train.method].family == "gmv"):
        raise ConfigError(f"train.method={cfg.train.method} does not fit {prep.log.kind} data ({prep.path})")
    ref_name, ref_cfg = ("gmv_single", cfg.model) if gmv else ("cascade_cvr", replace(cfg.model, shared_embeddings=False))
    folder = Path(cfg.train.reference_dir) / "pretrained"
    refs = {"pretrained": pretrained("base", ref_name, ref_cfg, prep, cfg.data, cfg.train, folder, console)}
    oracle = None if cfg.train.method == "oracle" else oracle_reference(cfg, prep, console)
    ckpt = checkpoint_dir(cfg)
    console.print(f"[bold]{cfg.dataset}/{cfg.name}[/]: {cfg.train.method} on {len(prep.log):,} clicks "
                  f"({'SIMULATED ' if prep.simulated else ''}{prep.log.kind}), {cfg.train.num_threads} threads")
    progress, model = _stream(cfg, prep, ckpt, console, refs)
    if cfg.train.method == "oracle" and not gmv:
        _write_reference(Path(cfg.train.reference_dir) / f"oracle-{_reference_key(cfg, prep)}.json", mean_over_segments(progress.rows))
        oracle = mean_over_segments(progress.rows)
    avg = mean_over_segments(progress.rows)
    state = FitState(epoch=1, step=progress.segment, samples=progress.samples, train_seconds=progress.train_seconds,
                     eval_seconds=progress.eval_seconds, stopped=f"{progress.segment} segments streamed")
    cps = progress.clicks / max(progress.train_seconds, 1e-9)
    return {**result_fields(cfg, model, state, d, t_start, ckpt),
            "simulated": prep.simulated, "method": cfg.train.method,
            "protocol": {**asdict(prep.windows), "segment_s": cfg.data.segment_s, "pretrain_days": [cfg.data.pretrain_start_day, cfg.data.pretrain_end_day],
                         "stream_days": [cfg.data.stream_start_day, cfg.data.stream_end_day], "segments": progress.segment,
                         "ri_reference": "pretrained: same run; oracle: " + ("cached reference run" if oracle else "none")},
            "data": {**prep.log.stats(), "path": str(prep.path), "digest": prep.digest, "source": cfg.data.source,
                     "rejected": prep.log.rejected.summary()},
            "metrics": summarize(avg, oracle, gmv),
            "pretrained": summarize({k[len("pretrained."):]: v for k, v in avg.items() if k.startswith("pretrained.")}, None, gmv),
            "oracle": summarize(oracle, None, gmv) if oracle else None,
            "segment_auc": [r.get("netcvr.auc" if not gmv else "gmv.auc", float("nan")) for r in progress.rows],
            "clicks_per_second": round(cps, 1), "stream_clicks": progress.clicks, "stream_samples": progress.samples,
            "clicks_per_second_end_to_end": round(progress.clicks / max(progress.train_seconds + progress.eval_seconds, 1e-9), 1)}


def evaluate(cfg: ExperimentConfig, data_dir: Path, checkpoint: Path) -> dict[str, Any]:
    raise ConfigError("the stream task evaluates while it streams; rerun `rankstream bench` (it resumes from its checkpoint)")


register_task("stream", run=run, evaluate=evaluate, data_cls=StreamDataConfig, train_cls=StreamTrainConfig,
              eval_cls=StreamEvalConfig, doc="online training with delayed feedback: CVR/NetCVR (CASCADE), GMV (TRACE)")
