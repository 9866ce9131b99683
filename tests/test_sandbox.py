"""The sandbox contains adversarial programs: one property per test (after nanochat's tests/test_execution.py).

Where a property is enforced by more than one layer, the test runs each layer alone ("guard": the Python
audit hook only; "kernel": namespaces + rlimits + Landlock, no audit hook), so that a regression in one
layer is not hidden by another.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from flywheel import sandbox
from flywheel.sandbox import Limits, SandboxUnavailable, run_python
from flywheel.verifiers.unit_tests import UnitTests

GUARD_ONLY = Limits(wall_s=3, namespaces=False, landlock=False, seccomp=False)
KERNEL_ONLY = Limits(wall_s=3, guard=False)
LAYERS = pytest.mark.parametrize("limits", [GUARD_ONLY, KERNEL_ONLY], ids=["guard", "kernel"])


def _procs_with(token: str) -> int:
    """Processes on this machine whose command line contains `token`."""
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                n += token in (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                pass
    return n


def test_a_correct_program_runs_and_its_output_is_captured():
    r = run_python("print(sum(range(10)))")
    assert r.ok and r.stdout == "45\n" and r.stderr == ""
    assert {"namespaces", "private-root", "rlimits", "seccomp", "audit-hook"} <= set(r.layers) and any(x.startswith("landlock") for x in r.layers)


def test_infinite_loop_is_killed_at_the_wall_timeout():
    t0 = time.perf_counter()
    r = run_python("while True:\n    pass", Limits(wall_s=1, cpu_s=30))
    assert r.status == "timeout" and time.perf_counter() - t0 < 4


def test_cpu_limit_kills_a_busy_program_before_the_wall_timeout():
    r = run_python("while True:\n    pass", Limits(wall_s=20, cpu_s=1))
    assert r.status == "killed" and r.seconds < 10  # SIGXCPU at 1 s of CPU (later on a loaded machine)


def test_fork_bomb_is_capped_and_leaves_no_process_behind():
    token = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    bomb = f"import os\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.execv('/bin/sleep', ['sleep', '{token}'])\n    except OSError:\n        pass\n"
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _procs_with(token))
            time.sleep(0.05)

    w = threading.Thread(target=watch)
    w.start()
    try:
        r = run_python(bomb, Limits(wall_s=2, processes=6, guard=False))
    finally:
        done.set()
        w.join()
    assert r.status == "timeout"
    assert 1 <= peak[0] <= 5  # RLIMIT_NPROC 6 in the sandbox's own user namespace: the bomb itself + 5
    time.sleep(0.2)
    assert _procs_with(token) == 0  # the PID namespace died with its first process


def test_fork_is_refused_by_the_audit_hook():
    r = run_python("import os\nos.fork()", GUARD_ONLY)
    assert r.status == "error" and "os.fork is not allowed" in r.stderr


def test_background_processes_die_with_the_program():
    token = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    prog = (f"import os\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n"
            f"        os.execv('/bin/sleep', ['sleep', '{token}'])\n")
    r = run_python(prog, KERNEL_ONLY)
    assert r.ok
    time.sleep(0.2)
    assert _procs_with(token) == 0


def test_memory_bomb_fails_with_memory_error():
    r = run_python("x = bytearray(4 * 1024**3)", Limits(memory_mb=256))
    assert r.status == "error" and "MemoryError" in r.stderr


@LAYERS
def test_writing_outside_its_folder_is_refused(tmp_path, limits):
    target = tmp_path / "pwned.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')", limits)
    assert r.status == "error" and ("Permission" in r.stderr or not limits.guard)  # kernel: the path does not exist
    assert not target.exists()


@LAYERS
def test_deleting_outside_its_folder_is_refused(tmp_path, limits):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    r = run_python(f"import os\nos.remove({str(victim)!r})", limits)
    assert r.status == "error" and victim.read_text() == "precious"


def test_writing_inside_its_folder_works():
    r = run_python("open('out.txt', 'w').write('hi')\nprint(open('out.txt').read())")
    assert r.ok and r.stdout == "hi\n"


def test_file_size_limit():
    r = run_python("open('big', 'wb').write(b'x' * 3 * 1024**2)", Limits(file_mb=1))
    assert not r.ok  # SIGXFSZ, or OSError 'File too large'


@pytest.mark.parametrize("limits", [GUARD_ONLY, Limits(wall_s=3, landlock=False, guard=False, seccomp=False),
                                    Limits(wall_s=3, namespaces=False, guard=False, seccomp=False),
                                    Limits(wall_s=3, namespaces=False, guard=False, landlock=False)],
                         ids=["guard", "network-namespace", "landlock", "seccomp"])
def test_no_network(limits):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    port = server.getsockname()[1]
    try:
        r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", limits)
        with pytest.raises(OSError):  # timeout: nobody connected
            server.accept()
    finally:
        server.close()
    assert r.status == "error" and ("Error" in r.stderr)


def test_environment_secrets_do_not_reach_the_program(monkeypatch):
    secret = "s3cr3t-" + secrets.token_hex(8)
    monkeypatch.setenv("FLYWHEEL_TEST_API_KEY", secret)
    prog = ("import os\nprint(dict(os.environ))\n"
            "for p in ('/proc/self/environ', '/proc/1/environ', '/proc/%d/environ' % os.getppid()):\n"
            "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)\n")
    r = run_python(prog, KERNEL_ONLY)
    assert secret not in r.stdout + r.stderr
    assert "FLYWHEEL_TEST_API_KEY" not in r.stdout and "HOME" in r.stdout


@pytest.mark.parametrize("limits", ["Limits(wall_s=3)", "Limits(wall_s=3, guard=False)",
                                    "Limits(wall_s=3, guard=False, namespaces=False)"],
                         ids=["all-layers", "kernel", "landlock-signal-scope"])
def test_killing_its_parent_fails_and_the_verifier_survives(limits):
    # The verifier runs in its own process here, so that a failure cannot take pytest down with it.
    code = ("import sys\nfrom flywheel.sandbox import Limits, run_python\n"
            f"r = run_python('import os, signal\\nos.kill(os.getppid(), signal.SIGKILL)\\n"
            f"os.kill(os.getpgid(0), signal.SIGKILL)', {limits})\n"
            "print('verifier survived', r.status)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "verifier survived" in out.stdout


def test_output_is_truncated():
    r = run_python("print('a' * 1_000_000)\nprint('the end')", Limits(output_bytes=1000))
    assert r.ok and len(r.stdout) < 1200 and "bytes cut by the sandbox" in r.stdout
    assert r.stdout.rstrip().endswith("the end")  # the tail is kept (tracebacks live there)


@pytest.mark.parametrize("missing,message", [({"namespaces": False}, "namespaces"), ({"landlock": 0}, "Landlock"),
                                             ({"pids_cgroup": None, "root": True}, "root"),
                                             ({"seccomp": False}, "libseccomp")])
def test_a_missing_kernel_layer_is_an_error_unless_allowed(monkeypatch, missing, message):
    found = {"namespaces": True, "namespaces_error": "", "landlock": 7, "pids_cgroup": None, "root": False,
             "seccomp": True, "seccomp_error": ""}
    monkeypatch.setattr(sandbox, "probe", lambda python=None: {**found, **missing})
    with pytest.raises(SandboxUnavailable, match=message):
        sandbox.layers_for(Limits())
    assert sandbox.layers_for(Limits(strict=False))[1]  # runs with what there is


# --- the unit-tests verifier on top -------------------------------------------------------------------

def _samples(completions: list[str]) -> pd.DataFrame:
    ref = '{"prefix": "def f(x):\\n    return ", "tests": ["assert f(2) == 7", "assert f(0) == 1"]}'
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(completions))], "prompt": "f?",
                         "reference": ref, "difficulty": 1, "completion": completions})


ADVERSARIAL = {
    "infinite loop": "3*x+1\nwhile True: pass",
    "fork bomb": "3*x+1\nimport os\nwhile True: os.fork()",
    "memory bomb": "3*x+1\nx = [0] * 10**10",
    "write outside": "3*x+1\nopen('/tmp/flywheel-pwned', 'w').write('x')",
    "socket": "3*x+1\nimport socket; socket.create_connection(('1.1.1.1', 80))",
    "env secret": "3*x+1\nimport os; os.environ['FLYWHEEL_TEST_API_KEY']",
    "kill parent": "3*x+1\nimport os; os.kill(os.getppid(), 9)",
    "exit before the tests": "3*x+1\nimport sys; sys.exit(0)",
}


@pytest.mark.parametrize("isolate", [True, False], ids=["process-per-test", "process-per-candidate"])
def test_unit_tests_verifier_scores_adversarial_candidates_as_failures_and_keeps_going(isolate):
    good, half = "3*x+1", "2*x+3"  # half passes f(2) == 7 only
    completions = [good, *ADVERSARIAL.values(), half, good]
    v = UnitTests(workers=2, isolate_tests=isolate, wall_s=1.5, cpu_s=1).verify_batch(_samples(completions))
    assert [x.correct for x in v] == [True] + [False] * len(ADVERSARIAL) + [False, True]
    assert v[0].score == 1.0 and v[-2].score == 0.5 and "test 1" in v[-2].reason
    assert not Path("/tmp/flywheel-pwned").exists()


def test_unit_tests_verifier_runs_in_parallel():
    slow = pd.concat([_samples(["(__import__('time').sleep(0.4), 3*x+1)[1]"])] * 1, ignore_index=True)
    slow = pd.concat([slow.assign(prompt_id=f"p{i}", completion=slow["completion"] + " " * i) for i in range(4)],
                     ignore_index=True)  # 4 distinct programs x 2 tests = 8 runs of >= 0.4 s each
    t0 = time.perf_counter()
    assert all(v.correct for v in UnitTests(workers=1).verify_batch(slow))
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert all(v.correct for v in UnitTests(workers=2).verify_batch(slow))
    two = time.perf_counter() - t0
    assert one > 3.2 and two < one * 0.7
