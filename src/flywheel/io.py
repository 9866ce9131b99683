"""Reading and writing artifacts: Parquet tables, JSON metrics, model folders.

Every write is atomic (write beside, then rename), so a killed step never leaves a half-written artifact
that a rerun would mistake for a finished one. Every read checks the columns the step needs and says
which file lacks which column, instead of a KeyError from deep inside pandas.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd


class ArtifactError(ValueError):
    """An input artifact that a step cannot use; the message names the file and the fix."""


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _write_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` to a temporary file beside `path`, then rename it into place: a reader never sees half a file."""
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a Parquet file atomically."""
    return _write_atomically(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_table(path: str | Path, required: Iterable[str] = (), what: str = "table") -> pd.DataFrame:
    """Read a Parquet file and check that it has the `required` columns."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found (expected a Parquet file)")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise ArtifactError(f"{path}: cannot read {what} as Parquet ({type(err).__name__}: {err})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ArtifactError(
            f"{path}: {what} is missing column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}. "
            f"Produce it with the step that writes {what} (see docs/architecture.md, 'Artifacts')."
        )
    return df


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    return _write_atomically(path, lambda tmp: tmp.write_text(text))


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write a binary file atomically."""
    return _write_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable), path)


def read_json(path: str | Path, what: str = "metrics") -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({err})") from None


def read_summary(path: str | Path, what: str = "run summary") -> dict:
    """A run's summary.json; one written before evaluate's entry took the step's name ('eval', until
    2026-12-02) is read with the current name, so a resumed or compared older run still reads."""
    summary = read_json(path, what)
    for it in summary.get("iterations", []):
        if "eval" in it and "evaluate" not in it:
            it["evaluate"] = it.pop("eval")
        if "eval" in (it.get("durations") or {}):
            it["durations"]["evaluate"] = it["durations"].pop("eval")
    return summary


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class atomic_dir:
    """Context manager: build a directory beside `path`, move it into place only on success.

    with atomic_dir(out) as tmp: model.save_pretrained(tmp)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.path.exists():
            # KFP hands a step an empty output path; a rerun by hand may find an old result there.
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
