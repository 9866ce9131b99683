"""`unit-tests`: run each candidate program against its problem's tests, in the sandbox, in parallel.

    verify:
      verifier: unit-tests
      params: {workers: 0, wall_s: 5, memory_mb: 512}    # 0 workers = one per CPU core

The problem's `reference` is JSON: `{"prefix": "<code before the completion>", "tests": ["assert f(1) == 2",
...]}` (what the `code` task writes). The program is `prefix + completion`; with `isolate_tests` (default)
every test runs in its own sandboxed process (`flywheel.sandbox`), so a test that crashes, hangs or exits
cannot touch the others; otherwise all tests of a candidate share one process (faster: one start-up per
candidate, bench/verify.py shows by how much). Score = share of tests passed; correct = all passed.

A test passes only when its process exits 0 *and* prints a random marker placed after the test, so a
candidate that calls `sys.exit(0)` or `os._exit(0)` before the tests run fails rather than passes. (A
program that reads its own source could still print the marker: containment, which the sandbox guarantees,
is not the same as a tamper-proof grader; compare outputs in the verifier for that.)

Runs are spread over `workers` threads, each waiting on one sandboxed process: the processes use the
cores, the threads only wait. Identical (program, test) pairs in one batch run once.
"""

from __future__ import annotations

import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import pandas as pd

from flywheel.sandbox import Limits, Result, layers_for, run_python
from flywheel.tasks import Verdict

LIMIT_NAMES = {f.name for f in fields(Limits)}


def parse_reference(reference: str, prompt_id: str = "?") -> tuple[str, list[str]]:
    """(prefix, tests) from a code problem's reference; a clear error if it is not that JSON."""
    try:
        ref = json.loads(reference)
        prefix, tests = ref.get("prefix", ""), ref["tests"]
        if not isinstance(prefix, str) or not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"problem {prompt_id}: reference {reference[:80]!r} is not unit-test JSON "
                         '{"prefix": str, "tests": [str, ...]}; the unit-tests verifier needs problems made by '
                         "the code task (or the same reference format)") from None
    if not tests:
        raise ValueError(f"problem {prompt_id}: no tests; a program cannot be checked without tests")
    return prefix, tests


class UnitTests:
    def __init__(self, workers: int = 0, isolate_tests: bool = True, **limits):
        """
        workers: sandboxed processes at a time (0 = os.cpu_count()).
        isolate_tests: one process per test (True) or per candidate (False).
        **limits: fields of flywheel.sandbox.Limits (wall_s, cpu_s, memory_mb, processes, file_mb, ...).
        """
        unknown = set(limits) - LIMIT_NAMES
        if unknown:
            raise TypeError(f"unknown sandbox limit(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(LIMIT_NAMES))}")
        self.limits = Limits(**limits)
        self.workers = workers or os.cpu_count() or 1
        self.isolate_tests = isolate_tests
        self.layers = layers_for(self.limits)[1]  # fails now, with the fix, if a required layer is missing

    # -- programs ----------------------------------------------------------------------------------------
    @staticmethod
    def _one_test(program: str, test: str, marker: str) -> str:
        return f"{program}\n\n{test}\nprint({marker!r})\n"

    @staticmethod
    def _all_tests(program: str, tests: list[str], marker: str) -> str:
        # Each test runs even when an earlier one fails; the marker line says which passed.
        return (f"{program}\n\ndef __flywheel_tests(__tests={tests!r}):\n    import sys as __s\n"
                f"    for __i, __t in enumerate(__tests):\n        try:\n            exec(__t, globals())\n"
                f"        except BaseException as __e:\n            print('{marker}', __i, 'fail',"
                f" type(__e).__name__, str(__e)[:200].replace(chr(10), ' '))\n"
                f"        else:\n            print('{marker}', __i, 'ok')\n        __s.stdout.flush()\n"
                f"__flywheel_tests()\nprint('{marker}', 'end')\n")

    def _run(self, program: str) -> Result:
        return run_python(program, self.limits)

    def _run_all(self, programs: list[str]) -> dict[str, Result]:
        from flywheel.console import progress  # minutes for a batch: say how far it is

        unique = list(dict.fromkeys(programs))
        if self.workers == 1 or len(unique) == 1:
            return dict(zip(unique, list(progress(map(self._run, unique), len(unique), "unit tests: programs"))))
        with ThreadPoolExecutor(self.workers) as pool:
            return dict(zip(unique, list(progress(pool.map(self._run, unique), len(unique), "unit tests: programs"))))

    # -- verifier interface ------------------------------------------------------------------------------
    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        marker = "flywheel-tests-passed-" + secrets.token_hex(8)  # unknown to the program until it runs
        jobs: list[tuple[list[str], list[str]]] = []  # per sample: (the tests, the programs run)
        parsed: dict[str, tuple[str, list[str]]] = {}
        for pid, ref, completion in zip(samples["prompt_id"], samples["reference"], samples["completion"]):
            if ref not in parsed:
                parsed[ref] = parse_reference(ref, pid)
            prefix, tests = parsed[ref]
            program = prefix + completion
            if self.isolate_tests:
                jobs.append((tests, [self._one_test(program, t, marker) for t in tests]))
            else:
                jobs.append((tests, [self._all_tests(program, tests, marker)]))
        results = self._run_all([p for _, progs in jobs for p in progs])
        return [self._verdict(tests, [results[p] for p in progs], marker) for tests, progs in jobs]

    def verify(self, problem: dict, completion: str) -> Verdict:
        return self.verify_batch(pd.DataFrame([{**problem, "completion": completion}]))[0]

    def _verdict(self, tests: list[str], results: list[Result], marker: str) -> Verdict:
        if self.isolate_tests:
            passed = [r.ok and r.stdout.rstrip().endswith(marker) for r in results]
            first_bad = next((i for i, ok in enumerate(passed) if not ok), None)
            why = _failure(results[first_bad], self.limits) if first_bad is not None else ""
        else:
            r = results[0]
            lines = [ln.split(" ", 3) for ln in r.stdout.splitlines() if ln.startswith(marker + " ")]
            ok_idx = {int(p[1]) for p in lines if len(p) >= 3 and p[2] == "ok"}
            finished = r.ok and any(p[1] == "end" for p in lines)
            passed = [finished and i in ok_idx for i in range(len(tests))]
            first_bad = next((i for i, ok in enumerate(passed) if not ok), None)
            fail = next((p for p in lines if len(p) >= 3 and p[2] == "fail" and int(p[1]) == first_bad), None)
            why = (" ".join(fail[3:]).strip() or "failed") if fail else _failure(r, self.limits)
        n_ok = sum(passed)
        if first_bad is None:
            return Verdict(True, 1.0, f"passed {n_ok}/{len(tests)} tests")
        return Verdict(False, n_ok / len(tests),
                       f"failed: {n_ok}/{len(tests)} tests passed; test {first_bad} ({tests[first_bad][:60]}): {why}")


def _failure(r: Result, limits: Limits) -> str:
    if r.status == "timeout":
        return f"timeout after {limits.wall_s:g}s"
    if r.status == "killed":
        return f"killed by signal {-r.returncode}"
    if r.status == "ok":
        return "exited before the tests finished"
    last = next((ln for ln in reversed(r.stderr.strip().splitlines()) if ln.strip()), "")
    return last[:200] or f"exit code {r.returncode}"
