"""Reading an offline W&B run back from its ``.wandb`` file, no server: what the tracking tests assert on.

Test-only (no package code reads W&B's binary log): the package writes runs, these tests read them back.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc32c, length, type) chunks
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, parts = 7, b""  # 7-byte file header: ":W&B", magic 0xBEE1, version
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (_FULL, _FIRST) else parts + chunk
        if kind in (_FULL, _LAST):
            yield parts
            parts = b""


def read_offline_run(run_dir: Path, wait_s: float = 0.0) -> dict[str, Any]:
    """``{"id", "job_type", "group", "config", "history", "summary", "metrics": {name: step}, "complete"}``.

    ``run_dir`` is a ``wandb/offline-run-*`` folder (what ``wandb sync`` uploads). Records are parsed with
    wandb's own protobuf schema (``wandb.proto.wandb_internal_pb2.Record``), as the sync reads them.
    ``run.finish()`` can return while wandb's service process is still writing the file (seen here: the last
    rows arrived a moment later), so ``wait_s`` waits for the run's exit record; ``complete`` says if it came.
    """
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_once(Path(run_dir))
        if out["complete"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.2)


def _read_once(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("*.wandb")
    out: dict[str, Any] = {"id": None, "config": {}, "history": [], "summary": {}, "metrics": {}}
    out["complete"] = False

    def put(target: dict, item) -> None:
        keys = list(item.nested_key) or [item.key]
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = json.loads(item.value_json)

    for raw in _records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["job_type"], out["group"] = rec.run.run_id, rec.run.job_type, rec.run.run_group
            for item in rec.run.config.update:
                put(out["config"], item)
        elif kind == "config":
            for item in rec.config.update:
                put(out["config"], item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                put(row, item)
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                put(out["summary"], item)
        elif kind == "metric":
            name = rec.metric.name or rec.metric.glob_name
            out["metrics"][name] = rec.metric.step_metric or None
        elif kind == "exit":
            out["complete"] = True
    return out
