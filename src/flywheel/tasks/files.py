"""Problems from a data file: reading JSONL or Parquet rows with errors that name file, line and field, and
splitting them into held-out, seed and prompt rows (shared by the `jsonl` and `code` tasks).

The split is a pure function of each row's prompt text (a CRC-32 hash), not of the file's order or the run's
seed, so every step of every run agrees on it without coordination, and a row never moves between the
held-out set and the training side when the file grows.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator


class DataError(ValueError):
    """A data file or row the task cannot use; the message names the file, the line or row, and the field."""


def resolve(path: str, repo: str = "", rev: str = "") -> tuple[Path, dict[str, Any] | None]:
    """The local file behind `path`, and what was read when it came from a DVC repository.

    With `repo` (a Git URL or a local repository; `rev` a branch, tag or commit, default HEAD) the file is
    read with `dvc.api` (from the repository's DVC remote when it is DVC-tracked, from Git otherwise) into a
    content-addressed local copy; the record says which commit and which bytes (md5) were used, so that
    `make_datasets` can put them in summary.json and W&B.
    """
    if path.startswith("dvc://"):
        raise DataError(f"{path}: name a file in a DVC repository with task.params.repo (and rev), e.g. "
                        "{path: data/train.jsonl, repo: https://github.com/org/data, rev: v1}")
    if repo or rev:
        return _fetch_dvc(path, repo, rev)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{path}: data file not found (relative paths are relative to the directory the "
                        "command runs in; on a cluster the file must be in the image or on a mounted volume, "
                        "or named in a DVC repository with task.params.repo)")
    return p, None


def _fetch_dvc(path: str, repo: str, rev: str) -> tuple[Path, dict[str, Any]]:
    import os

    from flywheel.io import write_bytes
    from flywheel.versions import read_dvc_bytes

    try:
        raw, record = read_dvc_bytes(repo, path, rev)
    except Exception as err:  # dvc raises many types (PathMissingError, RevError, NoRemoteError, ...)
        raise DataError(f"{path}: cannot read it from DVC repository {repo or '.'!r} at revision "
                        f"{rev or 'HEAD'!r} ({type(err).__name__}: {err}); check task.params.path, repo and "
                        "rev, and that the repository's DVC remote is reachable") from None
    cache = Path(os.environ.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel")) / "dvc-inputs"
    local = cache / f"{record['md5']}{Path(path).suffix}"
    if not local.is_file():  # content-addressed: written once, atomically, shared by every step on the host
        write_bytes(raw, local)
    return local, record


# A problem row is 0.1-5 KB in GSM8K, MBPP or HumanEval; 256 KiB leaves 50x headroom and keeps one bad row
# (a 5 MB one made the generate step grow to 23.5 GB) from reaching the steps at all.
MAX_ROW_BYTES = 256 * 1024


def read_records(path: str | Path, max_row_bytes: int = MAX_ROW_BYTES
                 ) -> Iterator[tuple[str, int, dict[str, Any] | DataError]]:
    """(location, number, record) for every row of a local .jsonl or .parquet file; location is 'FILE:LINE'
    or 'FILE row N', number the line (JSONL, from 1) or row (Parquet, from 0). A row that cannot be used
    (not UTF-8, not a JSON object, over `max_row_bytes`) comes as a `DataError` in place of the record. The
    file is read a line (a Parquet batch) at a time, and a long line is skipped without being held whole."""
    p = Path(path)
    if p.suffix == ".parquet":
        yield from _parquet_records(p, max_row_bytes)
        return
    with open(p, "rb") as f:
        n = 0
        while True:
            raw = f.readline(max_row_bytes + 2)  # + "\r\n"
            if not raw:
                return
            n += 1
            if len(raw.rstrip(b"\r\n")) > max_row_bytes:
                size = len(raw.rstrip(b"\r\n"))
                while not raw.endswith(b"\n"):  # the rest of the line, counted and dropped
                    raw = f.readline(1 << 20)
                    if not raw:
                        break
                    size += len(raw.rstrip(b"\r\n"))
                yield f"{p}:{n}", n, DataError(
                    f"{p}:{n}: row of {size:,} bytes is over the per-row cap of {max_row_bytes:,} bytes; "
                    "shorten or drop it (the code task's max_row_bytes parameter raises the cap)")
                continue
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield f"{p}:{n}", n, DataError(
                    f"{p}:{n}: not UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line); "
                    f"save the file as UTF-8, e.g. iconv -f LATIN1 -t UTF-8 {p.name} > fixed{p.suffix}")
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                # yielded, not raised, so that the caller can go on and count the other bad rows
                rec = DataError(f"{p}:{n}: not valid JSON ({err.msg} at column {err.colno}); "
                                "each line must be one JSON object")
            except RecursionError:
                rec = DataError(f"{p}:{n}: JSON nested too deeply to read; each line must be one flat JSON object")
            if not isinstance(rec, (dict, DataError)):
                rec = DataError(f"{p}:{n}: expected a JSON object, got {type(rec).__name__}")
            yield f"{p}:{n}", n, rec


def _parquet_records(p: Path, max_row_bytes: int) -> Iterator[tuple[str, int, dict[str, Any] | DataError]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
        batches = pf.iter_batches(batch_size=1024)
        i = 0
        for batch in batches:
            for rec in batch.to_pylist():  # Python values, as JSON would give (list columns: lists)
                size = len(json.dumps(rec, default=str))
                if size > max_row_bytes:
                    yield f"{p} row {i}", i, DataError(
                        f"{p} row {i}: row of about {size:,} bytes is over the per-row cap of {max_row_bytes:,} "
                        "bytes; shorten or drop it (the code task's max_row_bytes parameter raises the cap)")
                else:
                    yield f"{p} row {i}", i, rec
                i += 1
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) or OSError for non-Parquet
        raise DataError(f"{p}: cannot read as Parquet ({type(err).__name__}: {err})") from None


def field(loc: str, rec: dict, name: str, param: str, kind: type | tuple = str) -> Any:
    """`rec[name]`, checked; the error says which task parameter names the field."""
    if name not in rec:
        raise DataError(f"{loc}: no field {name!r} (the row has {', '.join(map(repr, rec)) or 'no fields'}); "
                        f"set task.params.{param} to the field that holds it")
    value = rec[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{loc}: field {name!r} must be a {want}, got {type(value).__name__} {str(value)[:60]!r}")
    return value


def load_problems(path: str, make: Callable[[str, int, dict], dict[str, Any]], repo: str = "",
                  rev: str = "", max_row_bytes: int = MAX_ROW_BYTES) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Apply `make(location, number, record) -> problem row` to every row; stop at the first bad one, saying how many
    others are bad too, so that one fix-and-rerun cycle sees the whole problem. Problem ids (`prompt_id`)
    must be unique: duplicates are an error naming the file and the ids. Returns the rows and, for a file
    read from a DVC repository, the record of what was read (`resolve`)."""
    local, record = resolve(path, repo, rev)
    rows, errors = [], []
    first_at: dict[str, str] = {}
    duplicates: dict[str, list[str]] = {}
    for loc, n, rec in read_records(local, max_row_bytes):
        if record:  # name the file as the user did, not the local copy
            shown = f"{record['repo']}@{record['rev']}:{path}"
            loc = loc.replace(str(local), shown, 1)
            if isinstance(rec, DataError):
                rec = DataError(str(rec).replace(str(local), shown, 1))
        try:
            if isinstance(rec, DataError):
                raise rec
            row = make(loc, n, rec)
        except DataError as err:
            errors.append(str(err))
            continue
        pid = str(row.get("prompt_id"))
        where = loc.rsplit(":", 1)[-1] if ":" in loc else loc.rsplit(" ", 1)[-1]
        if pid in first_at:
            duplicates.setdefault(pid, [first_at[pid]]).append(where)
        else:
            first_at[pid] = where
        rows.append(row)
    if errors:
        more = f" (and {len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
    if duplicates:
        unit = "lines" if not str(local).endswith(".parquet") else "rows"
        shown = "; ".join(f"{pid} ({unit} {', '.join(w)})" for pid, w in list(duplicates.items())[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        raise DataError(f"{path}: {len(duplicates)} duplicate problem id(s): {shown}{more}; ids must be unique "
                        "(drop or renumber the duplicates, or set task.params.id_field to a unique field)")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows, record


def _hash(text: str, salt: str = "") -> int:
    return zlib.crc32((salt + text).encode())


class ProblemPool:
    """Held-out, seed and prompt rows of a list of problems (each a problem row, seed rows with 'completion').

    held out: rows whose prompt hashes into the first `eval_fraction` of the range (fixed by the text);
    seed:     `seed_size` of the remaining rows that have a completion (and difficulty <= seed_max_difficulty,
              if set: a curriculum that labels only easy problems), chosen by a seeded hash;
    prompts:  the remaining rows, drawn afresh each iteration (without replacement until the pool runs out).
    """

    def __init__(self, rows: list[dict[str, Any]], eval_fraction: float, seed_size: int,
                 seed_max_difficulty: int | None = None, held_out: list[dict[str, Any]] | None = None):
        """`held_out`: the held-out rows themselves (a separate test file); then every row of `rows` whose
        prompt is not a held-out prompt is a training row."""
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        self.rows, self.eval_fraction, self.seed_size = rows, eval_fraction, seed_size
        self.seed_max_difficulty = seed_max_difficulty
        if held_out is not None:
            self.held_out = held_out
            prompts = {r["prompt"] for r in held_out}
            self.train = [r for r in rows if r["prompt"] not in prompts]
        else:
            cut = int(eval_fraction * 2**32)
            self.held_out = [r for r in rows if _hash(r["prompt"]) < cut]
            self.train = [r for r in rows if _hash(r["prompt"]) >= cut]
        if not self.held_out or not self.train:
            raise DataError(f"{len(rows)} rows split into {len(self.held_out)} held-out and {len(self.train)} "
                            f"training rows (eval_fraction {eval_fraction}); the data file needs more rows")

    def seed_set(self, seed: int) -> list[dict[str, Any]]:
        top = self.seed_max_difficulty
        labelled = [r for r in self.train if r.get("completion") and (top is None or r["difficulty"] <= top)]
        labelled.sort(key=lambda r: (_hash(r["prompt"], f"seed-{seed}-"), r["prompt_id"]))
        return [dict(r) for r in labelled[: self.seed_size]]

    def prompts(self, iteration: int, n: int, seed: int) -> list[dict[str, Any]]:
        seed_ids = {r["prompt_id"] for r in self.seed_set(seed)}
        pool = [r for r in self.train if r["prompt_id"] not in seed_ids] or self.train
        rng = random.Random(f"prompts-{seed}-{iteration}")
        out: list[dict[str, Any]] = []
        while len(out) < n:
            out += rng.sample(pool, min(len(pool), n - len(out)))
        return [{k: r[k] for k in ("prompt_id", "prompt", "reference", "difficulty")} for r in out]

    def eval_sets(self, per_difficulty: int, seed: int) -> list[dict[str, Any]]:
        # The held-out rows are fixed; which of them are evaluated is fixed too (not seeded), so that runs
        # with different seeds are measured on the same problems.
        by_level: dict[int, list] = {}
        for r in sorted(self.held_out, key=lambda r: (_hash(r["prompt"], "eval-"), r["prompt_id"])):
            by_level.setdefault(r["difficulty"], []).append(r)
        return [{k: r[k] for k in ("prompt_id", "prompt", "reference", "difficulty")}
                for d in sorted(by_level) for r in by_level[d][:per_difficulty]]
