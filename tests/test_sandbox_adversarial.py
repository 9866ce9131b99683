"""Hostile candidates against the sandbox and the unit-tests grader: one test per hole class of issue 13,
and the new ones found while probing. Each asserts that the host is untouched or that the hack scores 0.

Kernel-layer tests run with the audit hook off (`guard=False`): the hook is a Python-level courtesy that C
code bypasses, so what must hold has to hold without it. Where more than one kernel layer enforces a
property, each is also run alone ("private-root": the mount namespace; "seccomp": the filter alone).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from flywheel.sandbox import Limits, run_python
from flywheel.verifiers.unit_tests import UnitTests, plan_test

ALL = Limits(wall_s=3, guard=False)
ROOT_ONLY = Limits(wall_s=3, guard=False, seccomp=False, landlock=False)
SECCOMP_ONLY = Limits(wall_s=3, guard=False, namespaces=False, landlock=False)
KERNEL = pytest.mark.parametrize("limits", [ALL, ROOT_ONLY, SECCOMP_ONLY], ids=["all", "private-root", "seccomp"])


def _host_files(tmp_path: Path) -> list[Path]:
    """A host file the program cannot see (tmp) and, where we may write there, one it sees read-only (in
    the Python installation, which the private root binds read-only)."""
    files = [tmp_path / "victim"]
    try:
        fd, visible = tempfile.mkstemp(prefix="flywheel-victim-", dir=sys.base_prefix)
        os.close(fd)
        files.append(Path(visible))
    except OSError:
        pass
    for f in files:
        f.write_text("precious")
        os.chmod(f, 0o644)
        os.utime(f, (1_000_000_000, 1_000_000_000))
    return files


def _snapshot(f: Path):
    st = os.stat(f)
    xattrs = {n: os.getxattr(f, n) for n in os.listxattr(f)} if hasattr(os, "listxattr") else {}
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, xattrs, f.read_text()  # not atime: reading sets it


CTYPES_METADATA = """
import ctypes, ctypes.util
libc = ctypes.CDLL(None, use_errno=True)
for p in {paths!r}:
    b = p.encode()
    print(p, 'chmod', libc.chmod(b, 0o4777), ctypes.get_errno())
    print(p, 'chown', libc.chown(b, 1234, 1234), ctypes.get_errno())
    print(p, 'utimes', libc.utimes(b, None), ctypes.get_errno())
    print(p, 'setxattr', libc.setxattr(b, b'user.pwned', b'1', 1, 0), ctypes.get_errno())
    fd = libc.open(b, 0)
    if fd >= 0:
        print(p, 'fchmod', libc.fchmod(fd, 0o4777), libc.fsetxattr(fd, b'user.pwned', b'1', 1, 0), ctypes.get_errno())
"""

BINARY_METADATA = """
import subprocess
for p in {paths!r}:
    for cmd in (['chmod', '4777', p], ['touch', '-d', '2001-01-01', p], ['chown', '1234', p]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            print(cmd, r.returncode, r.stderr.strip())
        except OSError as e:
            print(cmd, e)
"""


@KERNEL
@pytest.mark.parametrize("how", [CTYPES_METADATA, BINARY_METADATA], ids=["libc-ctypes", "spawned-binary"])
def test_host_file_metadata_is_out_of_reach(tmp_path, limits, how):
    files = _host_files(tmp_path)
    before = [_snapshot(f) for f in files]
    try:
        r = run_python(how.format(paths=[str(f) for f in files]), limits)
        assert [_snapshot(f) for f in files] == before, r.stdout + r.stderr
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def test_the_bootstraps_own_libc_is_gone_and_ctypes_through_main_changes_nothing(tmp_path):
    # The old hole: the bootstrap's already-loaded libc, reachable through `__main__`, unseen by the hook.
    files = _host_files(tmp_path)
    before = [_snapshot(f) for f in files]
    prog = ("import __main__\nprint('libc' in vars(__main__))\nlibc = __main__.ctypes.CDLL(None)\n"
            + "".join(f"libc.chmod({str(f).encode()!r}, 0o4777)\n" for f in files))
    try:
        r = run_python(prog, Limits(wall_s=3))
        assert r.stdout.startswith("False") and [_snapshot(f) for f in files] == before
    finally:
        for f in files:
            f.unlink(missing_ok=True)


@pytest.fixture
def unix_server(tmp_path):
    """A Unix-socket server on the host, at a path and in the abstract namespace; yields (path, name, hits)."""
    path, name = str(tmp_path / "host.sock"), f"\0flywheel-test-{os.getpid()}-{time.monotonic_ns()}"
    servers = []
    for addr in (path, name):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(addr)
        s.listen()
        s.settimeout(0.05)
        servers.append(s)
    hits, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            for s in servers:
                try:
                    conn, _ = s.accept()
                    hits.append(conn.recv(100))
                    conn.close()
                except OSError:
                    pass

    t = threading.Thread(target=serve)
    t.start()
    yield path, name, hits
    stop.set()
    t.join()
    for s in servers:
        s.close()


@KERNEL
@pytest.mark.parametrize("via", ["socket-module", "libc-ctypes"])
def test_host_unix_sockets_are_out_of_reach(unix_server, limits, via):
    path, name, hits = unix_server
    if via == "socket-module":
        prog = ("import socket\nfor a in ({!r}, {!r}):\n    try:\n        s = socket.socket(socket.AF_UNIX)\n"
                "        s.connect(a)\n        s.send(b'pwned')\n        print('connected', a)\n"
                "    except OSError as e:\n        print(a, e)\n").format(path, name)
    else:  # the raw syscalls, bypassing the socket module
        prog = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                "for a in ({!r}, {!r}):\n    fd = libc.socket(1, 1, 0)\n    b = a.encode()\n"
                "    addr = ctypes.create_string_buffer(b'\\x01\\x00' + b, 110)\n"
                "    print(a, fd, libc.connect(fd, addr, 2 + len(b)), ctypes.get_errno())\n"
                "    libc.write(fd, b'pwned', 5)\n").format(path, name)
    r = run_python(prog, limits)
    time.sleep(0.15)
    assert hits == [] and "connected" not in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("name,attack", [
    ("kernel escape hatches", """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def e(r):
    return 'ok' if r == 0 else ctypes.get_errno()
out = {}
out['remount /usr rw'] = e(libc.mount(None, b'/usr', None, 32 | 4096, None))
out['mount proc'] = e(libc.mount(b'proc', b'.', b'proc', 0, None))
out['mount tmpfs'] = e(libc.mount(b'tmpfs', b'.', b'tmpfs', 0, None))
out['unshare user'] = e(libc.unshare(0x10000000))
out['unshare mount'] = e(libc.unshare(0x00020000))
out['chroot'] = e(libc.chroot(b'.'))
out['io_uring_setup'] = e(libc.syscall(425, 8, ctypes.create_string_buffer(120)))
out['open_by_handle_at'] = e(libc.syscall(304, -100, ctypes.create_string_buffer(16), 0))
out['bpf'] = e(libc.syscall(321, 0, None, 0))
out['ptrace parent'] = e(libc.syscall(101, 16, os.getppid() or 1, 0, 0))
print(out)
"""),
])
def test_kernel_escape_hatches_are_closed(name, attack):
    r = run_python(attack, ALL)
    out = eval(r.stdout.strip().splitlines()[-1]) if r.ok else {}
    assert out and all(v != "ok" for v in out.values()), r.stdout + r.stderr


def test_no_host_path_outside_the_private_root_exists_for_the_program():
    probe_paths = ["/run", "/home", "/proc", "/sys", "/etc/passwd", "/var", "/work", os.getcwd(), str(Path.home())]
    prog = (f"import os\nprint(os.getcwd())\nprint(os.listdir('/tmp'))\nfor p in {probe_paths!r}:\n"
            "    print(p, os.path.lexists(p))\n")
    r = run_python(prog, Limits(wall_s=3, guard=False, landlock=False))
    cwd, tmp, *lines = r.stdout.splitlines()
    assert eval(tmp) == [Path(cwd).parent.name]  # /tmp holds only the path to its own folder
    seen = {p for p, v in (line.rsplit(" ", 1) for line in lines) if v == "True"}
    # The Python installation may live under the home folder (pyenv): that path exists, read-only, and no more.
    assert seen <= {p for p in probe_paths if sys.base_prefix.startswith(p + "/")}, r.stdout + r.stderr


def test_sibling_candidates_folders_are_out_of_reach():
    secret = f"sibling-{time.monotonic_ns()}"
    writer = f"open('note.txt', 'w').write({secret!r})\nimport time\ntime.sleep(1.5)\n"
    reader = ("import glob, os, time\ntime.sleep(0.4)\nhits = []\nfor pat in ('/tmp/flywheel-sandbox-*/work/*', "
              "'/tmp/*/*', '../*/*', '../../*/*/*'):\n    for p in glob.glob(pat):\n        try:\n"
              "            hits.append(open(p).read())\n        except OSError:\n            pass\nprint(hits)\n")
    out = {}
    threads = [threading.Thread(target=lambda k, p: out.__setitem__(k, run_python(p, ALL)), args=(k, p))
               for k, p in (("w", writer), ("r", reader))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["r"].ok and secret not in out["r"].stdout


def test_its_folder_is_a_capped_tmpfs_not_the_host_disk():
    r = run_python("open('big', 'wb').write(b'x' * 30 * 1024**2)", Limits(wall_s=5, disk_mb=8, file_mb=64))
    assert r.status == "error" and "No space left" in r.stderr


# --- the runner reads output through its own pipes -----------------------------------------------------

OUTPUT_ATTACKS = {
    # the old holes: the runner read .stdout/.stderr by path in the candidate's folder
    "remove": "import os, glob\nfor p in glob.glob('.*') + glob.glob('*') + glob.glob('../*'):\n    "
              "try:\n        os.remove(p)\n    except OSError:\n        pass\nprint('done')",
    "replace with fifo": "import os\nfor p in ('.stdout', '.stderr', '../.stdout'):\n    try:\n        "
                         "os.remove(p)\n    except OSError:\n        pass\n    try:\n        os.mkfifo(p)\n"
                         "    except OSError:\n        pass\nprint('done')",
    "relink to a host file": "import os\nfor p in ('.stdout', '.stderr'):\n    try:\n        os.remove(p)\n"
                             "    except OSError:\n        pass\n    os.symlink('/etc/passwd', p)\nprint('done')",
    "flood stdout": "import os\nwhile True:\n    os.write(1, b'x' * 65536)",
    "flood stderr and the channel": "import os\nwhile True:\n    for fd in range(2, 64):\n        try:\n"
                                    "            os.write(fd, b'y' * 65536)\n        except OSError:\n            pass",
    "close its outputs and fork a sleeper": "import os, time\nos.close(1)\nos.close(2)\nif os.fork() == 0:\n"
                                            "    time.sleep(30)\n",
}


def _samples(completions: list[str], tests: list[str] | None = None, prefix: str = "def f(x):\n    return ") -> pd.DataFrame:
    ref = json.dumps({"prefix": prefix, "tests": tests or ["assert f(2) == 7", "assert f(0) == 1"]})
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(completions))], "prompt": "f?",
                         "reference": ref, "difficulty": 1, "completion": completions})


@pytest.mark.parametrize("isolate", [True, False], ids=["process-per-test", "process-per-candidate"])
def test_attacks_on_its_own_output_get_their_own_verdict_and_the_batch_goes_on(isolate):
    completions = ["3*x+1", *(f"0\n{a}" for a in OUTPUT_ATTACKS.values()), "3*x+1"]
    t0 = time.perf_counter()
    v = UnitTests(workers=2, isolate_tests=isolate, wall_s=1.5, cpu_s=1).verify_batch(_samples(completions))
    assert time.perf_counter() - t0 < 30  # nothing hangs: each run ends by its wall time
    assert [x.correct for x in v] == [True] + [False] * len(OUTPUT_ATTACKS) + [True]
    assert not any("root:" in x.reason for x in v)  # no host file's text in a verdict


def test_a_flood_is_read_in_bounded_memory():
    r = run_python("import os\nfor _ in range(3000):\n    os.write(1, b'x' * 65536)\nprint('the end')",
                   Limits(wall_s=20, output_bytes=1000))  # ~200 MB through the pipe
    assert r.ok and len(r.stdout) < 1200 and r.stdout.rstrip().endswith("the end")
    assert "bytes cut by the sandbox" in r.stdout


# --- grading the candidate cannot forge ----------------------------------------------------------------

HACKS = {
    "__eq__ always true": "type('A', (), {'__eq__': lambda s, o: True, '__hash__': lambda s: 0})()",
    "int subclass with __eq__": "type('I', (int,), {'__eq__': lambda s, o: True, '__ne__': lambda s, o: False})(0)",
    "str subclass": "type('S', (str,), {'__eq__': lambda s, o: True})('')",
    "marker from its source": "0\nimport re\nfor m in re.findall(r'flywheel-tests-passed-\\w+', open('program.py').read()):\n"
                              "    print(m)\n    print(m, 0, 'ok')\n    print(m, 1, 'ok')\n    print(m, 'end')",
    "marker from frames, constants, globals": (
        "0\nimport sys, gc\ndef spill():\n    f = sys._getframe()\n    while f:\n        for v in list(f.f_globals.values())"
        " + list(f.f_locals.values()) + list(f.f_code.co_consts):\n            print(v)\n        f = f.f_back\n"
        "import atexit\natexit.register(spill)\nspill()"),
    "trace function skipping asserts": (
        "0\nimport sys\ndef t(frame, event, arg):\n    if event == 'line' and frame.f_code.co_filename != 'program.py':\n"
        "        try:\n            frame.f_lineno = frame.f_lineno + 1\n        except Exception:\n            pass\n"
        "    return t\nsys.settrace(t)\nimport threading\nthreading.settrace(t)"),
    "redefine the helpers": (
        "0\nimport builtins, math\nmath.isclose = lambda *a, **k: True\nbuiltins.abs = lambda x: 0\n"
        "builtins.sorted = lambda x, **k: [1, 2]\nbuiltins.len = lambda x: 3\nAssertionError = None"),
    "replace exec, eval, print, json, os.write": (
        "0\nimport builtins, json, os\nbuiltins.exec = lambda *a, **k: None\nbuiltins.eval = lambda *a, **k: 7\n"
        "builtins.print = lambda *a, **k: None\njson.dumps = lambda *a, **k: '{\"i\": 0, \"v\": 7}'\n"
        "os.write = lambda fd, b: len(b)\nimport __main__\n__main__.json = json"),
    "exit before the probes": "0\nimport os\nos._exit(0)",
    "exception whose str() raises": "(_ for _ in ()).throw(type('E', (Exception,), {'__str__': lambda s: 1 / 0})())",
    "huge int": "10 ** 10000",
    "self-referential list": "(lambda l: (l.append(l), l)[1])([])",
    # from the probe of 2026-12-03
    "a generator of the right value": "(v for v in [7])",
    "the right digits as str or bytes": "'7' if x else b'1'",
    "nan, which equals nothing": "float('nan')",
    "builtins emptied": "0\nimport builtins\nfor k in list(vars(builtins)):\n    if k != '__import__':\n        delattr(builtins, k)",
    "signals ignored, then a spin": "0\nimport signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):\n"
                                    "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
}


@pytest.mark.parametrize("isolate", [True, False], ids=["process-per-test", "process-per-candidate"])
def test_reward_hacks_score_zero(isolate):
    tests = ["assert f(2) == 7", "assert math.isclose(f(1), 4.0)", "assert abs(f(0) - 1) < 1e-9",
             "assert sorted([f(1), f(2)]) == [4, 7]"]
    completions = ["3*x+1", *HACKS.values()]
    v = UnitTests(workers=2, isolate_tests=isolate, wall_s=2, cpu_s=1).verify_batch(_samples(completions, tests))
    assert v[0].correct and v[0].score == 1.0
    scores = {name: x.score for name, x in zip(HACKS, v[1:])}
    assert scores == {name: 0.0 for name in HACKS}, {n: x.reason for n, x in zip(HACKS, v[1:])}


def test_the_expected_values_never_enter_the_candidates_process():
    # Whatever the program can read (its source, every frame's globals, locals and code constants, every
    # object the GC knows), the expected value of the test is not among them: only the probes are sent.
    expected = "987654321"
    plan = plan_test(f"assert f(3) == {expected}")
    spy = ("import sys, gc\ndef f(x):\n    return 0\ndef spill():\n    print(open('program.py').read())\n"
           "    for o in gc.get_objects():\n        try:\n            print(repr(o)[:1000])\n        except Exception:\n"
           "            pass\n    fr = sys._getframe()\n    while fr:\n        print(fr.f_globals, fr.f_locals, fr.f_code.co_consts)\n"
           "        fr = fr.f_back\nimport atexit\natexit.register(spill)\n")
    r = run_python(spy, Limits(wall_s=10, output_bytes=50_000_000, guard=False), probes=list(plan.probes))
    assert r.ok and "f(3)" in r.stdout and len(r.stdout) > 10_000  # it did see the probe, and much else
    assert expected not in r.stdout


def test_forged_records_count_only_as_the_values_they_claim():
    # A program can write lines on the result channel itself; they are values like any other: claiming
    # wrong ones loses, and claiming the right one is what returning it would have done.
    forge = ("0\nimport os, atexit\ndef forge():\n    for fd in range(3, 64):\n        try:\n"
             "            os.write(fd, b'{\"i\": 0, \"v\": 8}\\n{\"i\": 1, \"v\": {\"tuple\": [1]}}\\n')\n"
             "        except OSError:\n            pass\natexit.register(forge)\nforge()")
    v = UnitTests(workers=1).verify_batch(_samples([forge]))[0]
    assert v.score == 0.0


def test_a_run_that_does_not_end_cleanly_fails_whatever_its_channel_holds():
    # The right values forged on the channel, then a hang (or a crash): the probes never ran, so no test
    # passes, in either isolation mode.
    forge = ("0\nimport os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"i\": 0, \"v\": 7}\\n')\n"
             "    except OSError:\n        pass\n")
    for isolate in (True, False):
        v = UnitTests(workers=1, isolate_tests=isolate, wall_s=1.5, cpu_s=1).verify_batch(
            _samples([forge + "import time\ntime.sleep(60)", forge + "import os\nos._exit(3)"], ["assert f(2) == 7"]))
        assert [x.score for x in v] == [0.0, 0.0], [x.reason for x in v]
        assert "timeout" in v[0].reason and "exit code 3" in v[1].reason


def test_exact_plain_types_only_on_the_trusted_side():
    from flywheel.verifiers.unit_tests import decode

    assert decode({"tuple": [1, {"set": [2]}]}) == (1, {2}) and type(decode({"tuple": []})) is tuple
    for bad in ({"__class__": "A"}, {"tuple": [1], "x": 2}, {"float": "1e999"}, {"dict": [[1]]}):
        with pytest.raises(ValueError):
            decode(bad)


def test_a_check_that_would_cost_the_verifier_unbounded_memory_fails_instead():
    v = UnitTests(workers=1).verify_batch(_samples(["10 ** 9", "'x'"], ["assert len(f(1) * 'ab') > 0",
                                                                       "assert f(1) ** 123456789 > 0"]))
    assert [x.score for x in v] == [0.0, 0.0] and "too large" in v[0].reason
