"""The streaming loop: consume segment n, join labels, train on its samples, evaluate on n+1.

Crash safety: after a segment (every ``checkpoint_every_s`` seconds, or every segment when 0)
the model, both optimizers, the join state, the source offset, the segment index and the
per-segment metrics are written to a NEW folder ``seg-<n>`` (safetensors + state.json with the
tensor file's SHA-256), which is then published by atomically replacing the ``LATEST`` pointer.
A process killed at any instant (even mid-write) restarts from the last published folder: the
join state and the offset belong to the same instant, so every event after that offset is
applied exactly once, and every random draw of segment n is seeded from (seed, n), so the
resumed run computes exactly what the uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.torch import load_file

from rankstream.data.stream.join import JoinState
from rankstream.data.stream.prepare import PreparedStream
from rankstream.data.stream.samples import Samples, build_samples
from rankstream.data.stream.source import EventSource
from rankstream.eval.delayed import binary_metrics, gmv_metrics
from rankstream.train.checkpoint import (
    CheckpointError,
    file_sha256,
    load_optimizer,
    optimizer_tensors,
    write_tensors,
)
from rankstream.train.loop import step_seed
from rankstream.train.stream_methods import Batch, Context, loss, predict
from rankstream.train.stream_pretrain import make_optimizers

SAMPLE_METHOD = {"pretrained_gmv": "online_single", "oracle_gmv": "oracle"}


@dataclass
class StreamProgress:
    """What survives a restart besides tensors (state.json)."""

    segment: int = 0  # segments completed
    offset: int = 0  # events consumed
    warm: bool = False  # events before the stream start applied
    samples: int = 0
    clicks: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    rows: list[dict[str, float]] = field(default_factory=list)


# Keys that may change between a run and its resumption (they do not change what is computed).
_RESUMABLE = {"checkpoint_dir", "checkpoint_every_s", "resume", "progress", "max_segments", "num_threads",
              "oracle_reference", "reference_dir", "source", "redis_url", "redis_key"}


def settings_digest(stream_digest: str, data_cfg: Any, train_cfg: Any, model: torch.nn.Module) -> str:
    """What a stream checkpoint must match to be resumed: the event stream, the settings that
    change the computation, and the model's parameter shapes."""
    cfg = {k: v for k, v in {**asdict(data_cfg), **asdict(train_cfg)}.items() if k not in _RESUMABLE}
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    payload = json.dumps({"stream": stream_digest, "cfg": cfg, "shapes": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class StreamRunner:
    """Runs one method through the stream (``run``) and returns the per-segment metrics."""

    def __init__(self, prep: PreparedStream, source: EventSource, model: torch.nn.Module, ctx: Context,
                 data_cfg: Any, train_cfg: Any, eval_cfg: Any, ckpt: Path, references: dict[str, torch.nn.Module],
                 console: Console) -> None:
        self.prep, self.source, self.model, self.ctx = prep, source, model, ctx
        self.dc, self.tc, self.ec, self.ckpt, self.console = data_cfg, train_cfg, eval_cfg, ckpt, console
        self.refs = references  # frozen models evaluated on the same segments (e.g. "pretrained")
        self.opts = make_optimizers(model, train_cfg.lr, train_cfg.weight_decay) if ctx.method.trains else []
        self.state = JoinState(prep.log.click_ts, prep.windows)
        self.progress = StreamProgress()
        self.feats = torch.from_numpy(prep.log.features)
        seg = data_cfg.segment_s
        start, end = int(data_cfg.stream_start_day * 86400), int(data_cfg.stream_end_day * 86400)
        self.bounds = np.arange(start, end + 1, seg, dtype=np.int64)
        if len(self.bounds) < 2:
            raise ValueError(f"the stream [{data_cfg.stream_start_day}, {data_cfg.stream_end_day}) days holds no {seg}-s segment")
        self.settings = settings_digest(prep.digest, data_cfg, train_cfg, model)

    # -- checkpoints -----------------------------------------------------------------------
    def _tensors(self) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """Every tensor to checkpoint, and the optimizers' JSON-able rest."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        metas = []
        for i, o in enumerate(self.opts):
            tensors, meta = optimizer_tensors(o)
            out.update({f"opt{i}.{k}": v for k, v in tensors.items()})
            metas.append(meta)
        out.update({f"join.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.arrays().items()})
        return out, metas

    def save(self) -> None:
        name = f"seg-{self.progress.segment:06d}"
        tmp = self.ckpt / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors, metas = self._tensors()
        try:  # a failed write leaves no temporary folder: the previous checkpoint stays LATEST
            digest = write_tensors(tensors, tmp / "tensors.safetensors")
            state = {"progress": self.progress.__dict__, "optimizers": metas, "sha256": digest,
                     "method": self.ctx.method.name, "settings": self.settings}
            (tmp / "state.json").write_text(json.dumps(state, default=float))
        except (CheckpointError, OSError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.ckpt / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = self.ckpt / f".LATEST.tmp-{os.getpid()}"
        pointer.write_text(name)
        os.replace(pointer, self.ckpt / "LATEST")
        for old in sorted(self.ckpt.glob("seg-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> bool:
        latest = self.ckpt / "LATEST"
        if not latest.is_file():
            return False
        folder = self.ckpt / latest.read_text().strip()
        state = json.loads((folder / "state.json").read_text())
        if file_sha256(folder / "tensors.safetensors") != state["sha256"] or state["method"] != self.ctx.method.name:
            raise CheckpointError(f"stream checkpoint {folder} is corrupt or belongs to another method")
        if state.get("settings") != self.settings:
            raise CheckpointError(f"stream checkpoint {folder} was written with other data, model or training "
                                  "settings; set another train.checkpoint_dir, remove it, or train.resume=false")
        t = load_file(str(folder / "tensors.safetensors"))
        self.model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        for i, (o, meta) in enumerate(zip(self.opts, state["optimizers"], strict=True)):
            load_optimizer(o, {k[len(f"opt{i}."):]: v for k, v in t.items() if k.startswith(f"opt{i}.")}, meta)
        self.state.load_arrays({k[5:]: v.numpy() for k, v in t.items() if k.startswith("join.")})
        self.progress = StreamProgress(**state["progress"])
        self.console.print(f"resumed {self.ctx.method.name} after segment {self.progress.segment} (offset {self.progress.offset:,})")
        return True

    # -- one segment -----------------------------------------------------------------------
    def _consume(self, until: int) -> Any:
        ev = self.source.read(self.progress.offset, until)
        self.progress.offset += len(ev)
        return self.state.apply(ev)

    def _batch(self, s: Samples) -> Batch:
        def f(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x))

        return Batch(self.feats[f(s.click)], f(s.stage), f(s.label), f(s.delay_h), f(s.count), f(s.elapsed),
                     f(s.prev_label), f(s.prev_elapsed), f(s.final))

    def _train(self, s: Samples, k: int) -> None:
        if not self.ctx.method.trains or len(s) < 2:
            return
        seed = step_seed(self.tc.seed, k, 0, 0)
        torch.manual_seed(seed)
        self.ctx.gen.manual_seed(seed + 1)
        self.model.train()
        if self.tc.batchnorm == "frozen":  # normalise with the pre-trained statistics (see the config)
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        parts = np.array_split(np.arange(len(s)), max(1, round(len(s) / self.tc.batch_size)))
        for idx in parts:
            if len(idx) < 2:
                continue
            for o in self.opts:
                o.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.tc.bf16):
                value = loss(self.ctx, self.model, self._batch(s.take(idx)))
            value.float().backward()
            for o in self.opts:
                o.step()
        self.progress.samples += len(s)

    @torch.no_grad()
    def _evaluate(self, lo_t: int, hi_t: int) -> dict[str, float]:
        lo, hi = np.searchsorted(self.prep.log.click_ts, [lo_t, hi_t], side="left")
        if hi - lo < 2:
            return {}
        ids = self.feats[lo:hi]
        row: dict[str, float] = {"clicks": float(hi - lo)}
        for prefix, model in [("", self.model), *((f"{n}.", m) for n, m in self.refs.items())]:
            model.eval()
            preds = predict(self.ctx, model, ids)
            row.update(self._metrics(prefix, preds, lo, hi))
        return row

    def _metrics(self, prefix: str, preds: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, float]:
        t, out = self.prep.truth, {}
        if "gmv" in preds:
            groups = self.prep.log.features[lo:hi, self.ec.gauc_field] if self.ec.gauc_field >= 0 else None
            m = gmv_metrics(t.gmv[lo:hi], preds["gmv"].numpy(), groups)
            return {f"{prefix}gmv.{k}": v for k, v in m.items()}
        y = t.conversion[lo:hi].astype(np.float64)
        net = y * (1 - t.refund[lo:hi])
        for name, label in (("cvr", y), ("netcvr", net)):
            out.update({f"{prefix}{name}.{k}": v for k, v in binary_metrics(label, preds[name].numpy().astype(np.float64)).items()})
        return out

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> StreamProgress:
        if not (self.tc.resume and self.resume()):
            self.ckpt.mkdir(parents=True, exist_ok=True)
        p, b = self.progress, self.bounds
        if not p.warm:  # events before the stream start: state only, no samples
            self._consume(int(b[0]))
            p.warm = True
        last_save = time.monotonic()
        limit = len(b) - 1 if self.tc.max_segments <= 0 else min(len(b) - 1, self.tc.max_segments)
        method = SAMPLE_METHOD.get(self.ctx.method.name, self.ctx.method.name)
        while p.segment < limit:
            k = p.segment
            t0 = time.perf_counter()
            applied = self._consume(int(b[k + 1]))
            if self.ctx.method.trains:
                samples = build_samples(method, self.state, self.prep.windows, int(b[k]), int(b[k + 1]), applied,
                                        self.prep.truth, self.prep.gmv)
                self._train(samples, k)
            lo, hi = np.searchsorted(self.prep.log.click_ts, [b[k], b[k + 1]])
            p.clicks += int(hi - lo)
            t1 = time.perf_counter()
            p.rows.append(self._evaluate(int(b[k + 1]), int(b[k + 1]) + self.dc.segment_s))
            p.train_seconds += t1 - t0
            p.eval_seconds += time.perf_counter() - t1
            p.segment += 1
            if self.tc.progress and p.segment % 100 == 0:
                self.console.print(f"{self.ctx.method.name}: segment {p.segment}/{limit}, {p.clicks / max(p.train_seconds, 1e-9):,.0f} clicks/s")
            every = self.tc.checkpoint_every_s
            if self.ctx.method.trains and (every <= 0 or time.monotonic() - last_save >= every or p.segment == limit):
                self.save()
                last_save = time.monotonic()
        return p
