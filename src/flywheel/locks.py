"""Locks on folders that one process at a time may write: a run's `--out`, a train step's checkpoint folder.

    lock = hold_run_lock(out)          # `flywheel run`: a second run on the same --out is refused
    scratch = claim_scratch(folder)    # the train step: sweeps checkpoint folders left by killed steps

Both are `flock(2)` locks on a small file, so the kernel releases them when the holder dies, however it
dies (SIGKILL, OOM killer, a lost pod): a lock can never be stale. A lock is released when its object is
released (`release()`, or when it is garbage: the local variable of the function that took it goes away).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path


class RunLocked(ValueError):
    """Another live process holds the lock; the message names it and the way out."""


class FolderLock:
    """An exclusive flock on `path`, held until `release()` (or garbage collection, or process exit)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self, unlink: bool = False) -> None:
        if self.fd >= 0:
            if unlink:  # while still held, so no other process can take the lock on the file being removed
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.release()


def _try_lock(path: Path) -> FolderLock | None:
    """The lock on `path` (created if missing), or None while another process holds it. Retries when the
    file it locked was unlinked meanwhile by its previous holder (then the lock would guard nothing)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return FolderLock(path, fd)
        os.close(fd)


def hold_run_lock(out: Path) -> FolderLock:
    """Lock `out` for this `flywheel run`; RunLocked (naming the other run's pid) if a live run holds it."""
    path = Path(out) / ".flywheel-run.lock"
    lock = _try_lock(path)
    if lock is None:
        try:
            holder = path.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise RunLocked(f"{out}: another `flywheel run` is writing to this folder ({holder}); two runs on one "
                        "--out would overwrite each other's summary, report and model. Wait for it, stop it, or "
                        "pass a different --out")
    os.ftruncate(lock.fd, 0)
    os.write(lock.fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    return lock


def claim_scratch(folder: Path) -> FolderLock:
    """Lock the scratch folder `folder` (by `<folder>.lock` beside it) for this process, and remove every
    sibling folder whose lock no live process holds: the checkpoints of a step that was killed, which
    nothing would reuse (a later run's step writes another output path, so it has another folder). A retry
    of the killed step itself, which would resume from them, claims its folder before any sweep (its own is
    never swept)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    mine = _try_lock(folder.with_name(folder.name + ".lock"))
    while mine is None:  # the same output path trained by another live process: wait for it
        time.sleep(1)
        mine = _try_lock(folder.with_name(folder.name + ".lock"))
    for other in folder.parent.iterdir():
        # only scratch folders of this kind (same-length hex name, a lock file or a marker inside): a user's
        # `train.checkpoint_dir` may hold anything else, which is never ours to remove
        if other == folder or not other.is_dir() or not _is_scratch(other, len(folder.name)):
            continue
        lock = _try_lock(other.with_name(other.name + ".lock"))
        if lock is not None:  # nobody holds it: left by a killed step
            shutil.rmtree(other, ignore_errors=True)
            lock.release(unlink=True)
    return mine


def _is_scratch(path: Path, name_length: int) -> bool:
    """A folder that `claim_scratch` made: a hex name as long as ours, and its lock file beside it."""
    name = path.name
    return (len(name) == name_length and all(c in "0123456789abcdef" for c in name)
            and path.with_name(name + ".lock").is_file())
