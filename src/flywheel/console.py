"""The console of `flywheel run`: one line per finished step, a live line for the running one, the table last.

kfp.local prints everything a task does to this process's stdout: its own log records ("Executing task
'train-2'", "... finished with status SUCCESS", the outputs), and, through `print`, every line of the task's
subprocess (stdout and stderr merged), which starts with the executor input JSON (the whole config as one
escaped string) and holds tqdm bars that become one line per refresh (its pipe is read in text mode, so
'\\r' ends a line too): 2,566 lines for the 3-iteration demo. `StepView` takes sys.stdout and sys.stderr for
the length of the run, writes each task's lines to its own file (`DIR/logs/iter-1-train.log`; lines that
belong to no task go to `DIR/logs/flywheel.log`), and prints only what a person needs:

    iter 1  train       ok      loss 0.893 -> 0.883              36.2 s

Tasks are told apart by the thread that prints (kfp.local runs a task's subprocess in one thread, two at a
time under a ParallelFor); their names map to (iteration, step) through the display names the pipeline
gives them. A failed task gets its exception, the last lines of its log, the log's path and how to resume.
On a terminal a live line under the finished ones shows each running step, its time and its log's last
line (a progress bar, a batch count); elsewhere (CI, a pipe) only the finished lines are printed.

`--verbose` skips all of this: kfp.local's own stream, as before.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXECUTING = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
CACHE_HIT = re.compile(r"Task (\S+) cache hit \(key=(\w+)\)")
KFP_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")
JSON_PUNCT = re.compile(r'^\s*([\[\]{}],?|".*)$')  # the executor input JSON kfp.local's executor prints
OUTPUT_FILE = re.compile(r'"outputFile": "(.+)/executor_output\.json"')
TAIL = 12  # log lines shown under a failed step: enough for the exception and the frame that raised it


def task_names(pipeline) -> dict[str, tuple[int, str]]:
    """kfp.local's names of the tasks of `pipeline` (a compiled `@dsl.pipeline`) -> (iteration, step).

    kfp.local names a task after its component ('evaluate-2'); the pipeline names it for people ('evaluate 1',
    'prepare data'), and that display name carries the iteration."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag"]
    names: dict[str, tuple[int, str]] = {}
    for dag in dags:
        for key, task in dag.tasks.items():
            words = task.task_info.name.split()
            if spec.components[task.component_ref.name].WhichOneof("implementation") != "executor_label" \
                    or not words:
                continue  # a condition or a ParallelFor: a group of tasks, never run itself
            it = int(words[-1]) if words[-1].isdigit() else 0
            step = "-".join(words[:-1] if words[-1].isdigit() else words)
            step = {"merge-shards": "merge"}.get(step, step)  # display names are the step table's
            names[key] = names[task.component_ref.name.removeprefix("comp-")] = (it, step)
    return names


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


# The figure a person wants from each step, from the metrics it wrote (docs/architecture.md, "metrics").
FIGURES: dict[str, Callable[[dict], str]] = {
    "prepare": lambda m: f"seed {m.get('seed_rows')} rows, eval {m.get('eval_rows')}",
    "init-model": lambda m: f"{m['parameters']:,} parameters" if m.get("parameters") else str(m.get("base", "")),
    "prompts": lambda m: f"{m.get('prompts')} prompts" + (f" ({m['proposed']} proposed)" if m.get("proposed") else ""),
    "propose": lambda m: f"kept {m.get('kept')}",
    "generate": lambda m: f"{m.get('samples')} samples, {_num(m.get('tokens_per_second'), '.0f')} tok/s",
    "verify": lambda m: f"pass {_num(m.get('pass_rate'), '.2f')}",
    "curate": lambda m: f"kept {m.get('kept')}" + (" (seed rows only)" if m.get("fallback") else ""),
    "train": lambda m: f"loss {_num(m.get('loss_first'), '.3f')} -> {_num(m.get('loss'), '.3f')}",
    "evaluate": lambda m: f"acc {_num(m.get('accuracy'), '.3f')}" + (
        f" ({m['delta_accuracy']:+.3f})" if m.get("iteration") and "delta_accuracy" in m else ""),
    "promote": lambda m: ("promoted" if m.get("promoted") else "champion kept") + f" (p={_num(m.get('p_value'), '.2g')})"
                         + (f"; stop: {m['stop_reason']}" if m.get("stop_reason") else ""),
    "record": lambda m: "summary, report" + (
        f", W&B {m['iterations'][-1].get('tracking', {}).get('mode')}" if m.get("iterations") else ""),
}
METRICS_FILE = {"promote": "decision", "record": "summary"}


@dataclass
class _Task:
    name: str
    iteration: int | None
    step: str
    log: Path
    started: float = field(default_factory=time.monotonic)
    file: Any = None
    folder: str | None = None  # the task's output folder, from its executor input
    last: str = ""
    tail: deque = field(default_factory=lambda: deque(maxlen=200))
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="yellow"))


class StepView:
    """Routes kfp.local's stream into per-task logs and prints the compact view (see the module docstring)."""

    def __init__(self, console: Console, log_dir: str | Path, names: dict[str, tuple[int, str]],
                 cache_root: str | Path | None = None):
        self.console, self.names, self.cache_root = console, names, cache_root
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.main_log = open(self.log_dir / "flywheel.log", "w", encoding="utf-8")
        self.running: dict[int, _Task] = {}  # thread id -> its task
        self.finished: list[dict] = []  # {task, iteration, step, status, seconds, figure, log}
        self.failed: _Task | None = None
        self.lock = threading.RLock()
        self._seen: dict[str, int] = {}
        self._partial: dict[int, str] = {}
        self.live: Live | None = None

    # --- the stream ------------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        tid = threading.get_ident()
        with self.lock:
            buf = self._partial.pop(tid, "") + text
            *lines, rest = buf.split("\n")
            if rest:
                self._partial[tid] = rest
            for line in lines:
                self._line(tid, ANSI.sub("", line))

    def _line(self, tid: int, line: str) -> None:
        if m := EXECUTING.search(line):
            self._start(tid, m[1])
        task = self.running.get(tid)
        if task is None:
            self.main_log.write(line + "\n")
            if m := CACHE_HIT.search(line):
                task = self._new_task(m[1])
                task.folder = self._cached_folder(m[2])
                self._done(task, "cached")
            return
        task.file.write(line + "\n")
        if task.folder is None and (m := OUTPUT_FILE.search(line)):
            task.folder = m[1]
        if line.strip():
            task.tail.append(line)
            if not KFP_RECORD.match(line) and not JSON_PUNCT.match(line):
                task.last = line.strip()  # the live line: the task's own output, not kfp.local's records
        if m := FINISHED.search(line):
            self.running.pop(tid)
            task.file.close()
            self._done(task, "ok" if m[2] == "SUCCESS" else "failed")

    def _new_task(self, name: str) -> _Task:
        it, step = self.names.get(name, (None, name))
        stem = f"iter-{it}-{step}" if it is not None else step
        n = self._seen[stem] = self._seen.get(stem, 0) + 1  # a ParallelFor runs one task name per shard
        return _Task(name, it, step, self.log_dir / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log"))

    def _start(self, tid: int, name: str) -> None:
        task = self._new_task(name)
        task.file = open(task.log, "w", encoding="utf-8")
        self.running[tid] = task

    def _done(self, task: _Task, status: str) -> None:
        seconds = time.monotonic() - task.started if status != "cached" else None
        figure = self._figure(task) if status != "failed" else ""
        self.finished.append({"task": task.name, "iteration": task.iteration, "step": task.step, "status": status,
                              "seconds": seconds, "figure": figure, "log": str(task.log)})
        style = {"ok": "green", "cached": "cyan", "failed": "bold red"}[status]
        it = f"iter {task.iteration}" if task.iteration is not None else "      "
        line = Text(f"{it:<7} {task.step:<11} ")
        line.append(f"{status:<7}", style=style)
        line.append(f" {figure:<40.40} ")
        line.append(f"{seconds:>7.1f} s" if seconds is not None else "", style="dim")
        self.console.print(line, no_wrap=True, overflow="ellipsis", crop=True)
        if status == "failed":
            self.failed = task

    def _cached_folder(self, key: str) -> str | None:
        """The output folder of the run that made a cached task's outputs (its kfp.local cache entry)."""
        if self.cache_root is None:
            return None
        for entry in Path(self.cache_root).glob(f"{key}*.json"):
            with contextlib.suppress(OSError, ValueError):
                uris = [v["uri"] for v in json.loads(entry.read_text()).values() if isinstance(v, dict) and "uri" in v]
                return str(Path(uris[0]).parent) if uris else None
        return None

    def _figure(self, task: _Task) -> str:
        if task.folder is None or task.step not in FIGURES:
            return ""
        path = Path(task.folder) / METRICS_FILE.get(task.step, "metrics")
        try:
            return FIGURES[task.step](json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):  # a figure is a nicety: never fail the run for it
            return ""

    # --- the live line ---------------------------------------------------------------------------------
    def __rich__(self):
        with self.lock:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True)
            grid.add_column(no_wrap=True, overflow="ellipsis")  # one screen line per running step
            for task in self.running.values():
                it = f"iter {task.iteration}" if task.iteration is not None else ""
                text = Text(f"{it:<7} {task.step:<11} {time.monotonic() - task.started:6.0f} s  ")
                text.append(task.last, style="dim")
                grid.add_row(task.spinner, text)
            return grid

    # --- after the run ---------------------------------------------------------------------------------
    def failure_text(self, resume: str) -> str:
        """The failed step: its exception, the last lines of its log, the log's path, how to resume."""
        task = self.failed
        if task is None:
            return f"the pipeline failed; its log: {self.log_dir / 'flywheel.log'}\n{resume}"
        # the task's own lines (kfp.local indents them by 4), not kfp.local's records about it
        lines = [ln.removeprefix("    ") for ln in task.tail
                 if ln.strip() and not set(ln.strip()) <= {"-"} and not KFP_RECORD.match(ln)]
        message = exception_message(lines)
        where = f"iteration {task.iteration}, step {task.step}" if task.iteration is not None else f"step {task.step}"
        tail = "\n".join("  " + ln.rstrip() for ln in lines[-TAIL:])
        return (f"error: {where} failed: {message}\n\nlast lines of its log:\n{tail}\n\n"
                f"full log: {task.log}\n{resume}")

    def close(self) -> None:
        with self.lock:
            for task in self.running.values():
                if task.file and not task.file.closed:
                    task.file.close()
            self.main_log.close()


RUNNING_STAGE = re.compile(r"^Running stage '([^']+)':")
SKIPPED_STAGE = re.compile(r"^Stage '([^']+)' didn't change, skipping")
FAILED_STAGE = re.compile(r"^ERROR: failed to reproduce '([^']+)'")
STAGE_METRICS = re.compile(r"^> flywheel .* --(?:metrics|summary) (\S+)")


def stage_name(stage: str) -> tuple[int, str]:
    """A dvc.yaml stage name (versions.dvc_yaml: 'generate_2', 'init-model', 'prepare') -> (iteration, step)."""
    base, _, tail = stage.rpartition("_")
    if base and tail.isdigit():
        return int(tail), base.replace("_", "-")
    return 0, stage.replace("_", "-")


class DvcView(StepView):
    """The same view for `dvc repro`: its stream is one process's, a stage at a time ("Running stage 'x':",
    then the command `> flywheel ...` and its output, until the next stage or an ERROR line)."""

    def _line(self, tid: int, line: str) -> None:
        started, skipped, failed = RUNNING_STAGE.match(line), SKIPPED_STAGE.match(line), FAILED_STAGE.match(line)
        task = self.running.get(0)
        if task is not None and (started or skipped or failed):
            self.running.pop(0)
            task.file.close()
            self._done(task, "failed" if failed else "ok")
        if started:
            task = self._new_task(started[1])
            task.file = open(task.log, "w", encoding="utf-8")
            self.running[0] = task
        elif skipped:
            self._done(self._new_task(skipped[1]), "cached")
        task = self.running.get(0)
        if task is None:
            self.main_log.write(line + "\n")
            return
        task.file.write(line + "\n")
        if m := STAGE_METRICS.match(line):
            task.folder = m[1]  # for a stage: its metrics file itself
        if line.strip():
            task.last = line.strip()
            task.tail.append(line)

    def _new_task(self, name: str) -> _Task:
        self.names.setdefault(name, stage_name(name))
        return super()._new_task(name)

    def _figure(self, task: _Task) -> str:
        if task.folder is None or task.step not in FIGURES:
            return ""
        try:
            return FIGURES[task.step](json.loads(Path(task.folder).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def finish(self) -> None:
        """The stream ended: a stage still open finished (dvc prints nothing after the last one)."""
        with self.lock:
            if (task := self.running.pop(0, None)) is not None:
                task.file.close()
                self._done(task, "ok")


def exception_message(lines: list[str]) -> str:
    """The exception a Python traceback in `lines` ends with ('GateError: ...', with the lines of its message
    that follow), without the module path; else the last line."""
    start = max((i for i, ln in enumerate(lines) if ln.strip().startswith("Traceback (most recent call last)")),
                default=None)
    if start is not None:
        for j in range(start + 1, len(lines)):
            # the first unindented line after the frames
            if not lines[j].startswith(" ") and re.match(r"^[\w.]+(: |$)", lines[j]):
                message = [re.sub(r"^(\w+\.)+(\w+)", r"\2", lines[j].strip())]
                return "\n".join(message + [ln.rstrip() for ln in lines[j + 1:j + 6]])
    return lines[-1].strip() if lines else "(no output)"


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr during a quiet run: every write goes to the view."""

    def __init__(self, view: StepView):
        self.view = view

    def write(self, text: str) -> int:
        self.view.write(text)
        return len(text)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


@contextlib.contextmanager
def step_view(console: Console, log_dir: str | Path, names: dict[str, tuple[int, str]],
              cache_root: str | Path | None = None):
    """Run the block with kfp.local's stream in per-task logs and the compact view on `console`."""
    view = StepView(console, log_dir, names, cache_root)
    before = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = stream = _Stream(view)
    # kfp.local logs cache hits at INFO outside its own logging context, where the root logger drops them
    root, handler = logging.getLogger(), logging.StreamHandler(stream)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        # Live draws the running steps under the printed lines on a terminal and nothing elsewhere;
        # redirect_*=False: sys.stdout/err are ours, Live's own proxy would print task lines to the screen.
        with Live(view, console=console, transient=True, refresh_per_second=4, redirect_stdout=False,
                  redirect_stderr=False) as view.live:
            yield view
    finally:
        sys.stdout, sys.stderr = before
        root.removeHandler(handler)
        root.setLevel(level)
        view.close()


def summary_table(summary: dict) -> Table:
    """The per-iteration table: the last thing `flywheel run` prints."""
    t = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for col in ("iteration", "accuracy", "beyond-seed", "pass-rate", "kept", "train-loss", "promoted", "seconds"):
        t.add_column(col, justify="right")
    for it in summary["iterations"]:
        ev = it["evaluate"]
        promoted = {True: "yes", False: "no", None: "-"}[it.get("promote", {}).get("promoted")]
        secs = sum(v for v in (it.get("durations") or {}).values() if v)
        t.add_row(str(it["iteration"]), _num(ev.get("accuracy"), ".3f"), _num(ev.get("accuracy_beyond_seed"), ".3f"),
                  _num(it.get("verify", {}).get("pass_rate"), ".3f"), str(it.get("curate", {}).get("kept", "-")),
                  _num(it.get("train", {}).get("loss"), ".4f"), promoted, _num(secs, ".0f"))
    return t


def progress(iterable, total: int, what: str):
    """A progress bar for a long batch inside a step (tqdm on stderr, at most one refresh per 5 s): in a
    `flywheel run` it is the running step's live line, in a task's log a line per refresh (a 5-minute batch
    adds ~60 lines), on a terminal the usual bar."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=what, mininterval=5, file=sys.stderr, dynamic_ncols=False, ncols=100)
