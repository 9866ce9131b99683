"""Read back what wandb wrote offline: the records of a `run-*.wandb` file.

wandb 0.31 writes the run's records (history rows, config, artifacts, ...) as protobuf `Record`s in the
LevelDB log format behind a 7-byte ':W&B' header; its Python reader is gone (the Go core writes them), so
tests parse the documented format: 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type:
1 full, 2 first, 3 middle, 4 last); fewer than 7 bytes left in a block are padding.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768


def records(path: str | Path) -> list:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path}: not a wandb log"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(pending)
            out.append(r)
            pending = b""
    return out


def read_runs(wandb_dir: str | Path) -> dict[str, dict]:
    """Every offline run under `wandb_dir` (its `wandb/` folder): run id -> group, history rows (key -> JSON
    text), metric definitions (name or glob -> step metric), artifacts (name, type, aliases, metadata and the
    manifest's (path, ref, size) entries)."""
    import json

    runs: dict[str, dict] = {}
    for f in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb")):
        run = {"group": None, "history": [], "metrics": {}, "artifacts": []}
        for r in records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run["group"] = r.run.run_group
                runs[r.run.run_id] = run
            elif kind == "history":
                run["history"].append({i.key or "/".join(i.nested_key): i.value_json for i in r.history.item})
            elif kind == "metric":
                run["metrics"][r.metric.name or r.metric.glob_name] = r.metric.step_metric
            elif kind == "artifact":
                a = r.artifact
                run["artifacts"].append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                         "metadata": json.loads(a.metadata or "{}"),
                                         "entries": [(e.path, e.ref, e.size) for e in a.manifest.contents]})
    return runs
