"""Run an untrusted Python program (a model's candidate answer) in a sandbox.

    from flywheel.sandbox import Limits, run_python
    r = run_python("print(sum(range(10)))", Limits(wall_s=2))
    r.status, r.stdout        # ('ok', '45\n')

The model writes the code, so the code is adversarial by default: a loop that never ends, a fork bomb, a
memory bomb, a write to `~/.bashrc`, a socket to the outside, a read of `AWS_SECRET_ACCESS_KEY`, a kill of
the verifier. Each program runs in layers, outermost first:

1. **Its own process and session**, started from an empty temporary directory (its cwd and `$HOME`), with a
   scrubbed environment (`PATH`, `LANG`, `HOME`, `TMPDIR` only: no secret of ours reaches it), stdin closed,
   stdout and stderr written to files in that directory and read back truncated. The wall-clock timeout
   kills the whole process group.
2. **Linux namespaces**, entered by the bootstrap (`unshare(2)`, then a fork): a new user namespace (its
   root is mapped to our own uid: no new privilege outside), a network namespace with nothing but a downed
   loopback, and a PID namespace whose first process runs the program: it cannot see or signal any process
   outside, and when it dies the kernel kills every process it started.
3. **Limits**: rlimits set before the program runs (CPU seconds, address space, file size, which also caps
   the output files, open files, no core dumps) and a process count: a `pids` cgroup with `pids.max`
   where one is writable (needed when running as root, whom `RLIMIT_NPROC` does not bind), else
   `RLIMIT_NPROC`, which in the sandbox's own user namespace counts only its own processes.
4. **Landlock** (Linux >= 5.13, unprivileged): the program may write only beneath its directory and read
   only there and in the Python installation and system libraries (`/usr`, `/lib`); TCP bind/connect is
   denied (ABI >= 4), and so are signals and abstract Unix sockets reaching outside (ABI >= 6).
5. **An audit hook** (PEP 578) as the innermost, Python-level guard: it refuses sockets, new processes,
   signals, `ctypes`, and writes, renames and deletions outside the directory, with a clear error.

Layers 2, 4 and the process cap depend on the kernel: `probe()` finds out once which are available, and
`Limits.strict` (default True) makes a missing one an error rather than a silent downgrade. Layer 5 alone is not a
security boundary (C extensions can bypass it); layers 1-4 are the kernel's. What is *not* contained: CPU
and memory bandwidth (the program competes with its neighbours for up to `wall_s`), and disk use inside
its own directory up to `file_mb` per file until the wall timeout. For hostile multi-tenant workloads use
a VM or gVisor sandbox (e.g. SandboxFusion) behind the same `run_python` interface.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

# The bootstrap runs in the child (`python -I -S -c BOOT workdir ...`) before the program: it joins the
# pids cgroup, enters the namespaces, sets the rlimits, applies Landlock, installs the audit hook, then
# executes `program.py`. `-I` ignores PYTHON* variables, the user site and the cwd on sys.path; `-S` skips
# `site` (no site-packages: candidate programs get the standard library only, and start in ~10 ms
# instead of ~35 ms here, where the virtualenv's .pth files make `site` slow).
BOOT = r'''
import os, resource, sys
wd, cg, cpu, mem, nproc, fsize, nofile, ns, landlock, guard = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:11])
if cg:
    with open(cg, "w") as f:
        f.write(str(os.getpid()))
if ns or landlock:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
if ns:
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x10000000 | 0x40000000 | 0x20000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID
        os.write(2, b"sandbox: unshare(user, net, pid) failed: " + os.strerror(ctypes.get_errno()).encode() + b"\n")
        os._exit(125)
    for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
    child = os.fork()  # the child is PID 1 of the new PID namespace; this process only waits and reports
    if child:
        status = os.waitpid(child, 0)[1]
        if os.WIFSIGNALED(status):
            os.kill(os.getpid(), os.WTERMSIG(status))  # die the same way, so the verifier sees the signal
            os._exit(128 + os.WTERMSIG(status))        # (if that signal is ignored here)
        os._exit(os.waitstatus_to_exitcode(status))
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: if the waiting parent dies, so does the program
for lim, v in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, fsize),
               (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)) + (((resource.RLIMIT_NPROC, nproc),) if nproc else ()):
    resource.setrlimit(lim, (v, v + (1 if lim == resource.RLIMIT_CPU else 0)))
src = open("program.py").read()
if landlock:
    def sc(*a):
        r = libc.syscall(*a)
        if r < 0:
            raise OSError(ctypes.get_errno(), "landlock syscall %d failed" % a[0])
        return r
    abi = sc(444, None, 0, 1)
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    net = 3 if abi >= 4 else 0
    scoped = 3 if abi >= 6 else 0
    attr = (ctypes.c_uint64 * 3)(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    rs = sc(444, ctypes.byref(attr), size, 0)
    FILE = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0)          # execute, write, read, truncate
    RO = 1 | 4 | 8                                             # execute, read file, read dir
    class PB(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]
    def allow(path, access):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        if not os.path.isdir(path):
            access &= FILE
        sc(445, rs, 1, ctypes.byref(PB(access & fs, fd)), 0)
        os.close(fd)
    allow(wd, fs)
    for p in {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
              "/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/zero"}:
        allow(p, RO)
    allow("/dev/null", FILE)
    libc.prctl(38, 1, 0, 0, 0)                                 # PR_SET_NO_NEW_PRIVS, required by Landlock
    sc(446, rs, 0)
if guard:
    # Everything the hook needs is bound as a default argument and immutable, and the hook is deleted from
    # this module's namespace: the program (which can import __main__) has no handle to change it.
    def _hook(event, args, _wd=wd + os.sep, _ap=os.path.abspath, _dec=os.fsdecode,
              _W=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND,
              _PATHS=frozenset(("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate",
                                "shutil.rmtree", "shutil.copyfile", "shutil.move")),
              _DENY=frozenset(("os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
                               "os.kill", "os.killpg", "subprocess.Popen", "os.symlink", "os.link", "os.chown",
                               "pty.spawn")),
              _PREFIXES=("socket.", "ctypes.", "gc.")):
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & _W)
            if writes and isinstance(path, (str, bytes)) and not _ap(_dec(path)).startswith(_wd):
                raise PermissionError("sandbox: writing outside the working directory is not allowed: %r" % (path,))
        elif event in _PATHS:
            path = args[0]
            if isinstance(path, (str, bytes)) and not _ap(_dec(path)).startswith(_wd):
                raise PermissionError("sandbox: %s outside the working directory is not allowed" % event)
        elif event in _DENY or event.startswith(_PREFIXES):
            raise PermissionError("sandbox: %s is not allowed" % event)
    sys.addaudithook(_hook)
    del _hook
sys.argv = ["program.py"]
exec(compile(src, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass(frozen=True)
class Limits:
    """What one sandboxed program may use. The defaults suit unit tests of short functions."""

    wall_s: float = 5.0          # wall-clock seconds before the process group is killed
    cpu_s: int = 4               # CPU seconds (RLIMIT_CPU: SIGXCPU, then SIGKILL a second later; as PID 1 of its
                                 # namespace the program ignores SIGXCPU, so the SIGKILL ends it)
    memory_mb: int = 512         # address space (RLIMIT_AS); Python itself needs ~20 MB
    processes: int = 8           # processes at once (pids cgroup, or RLIMIT_NPROC in its user namespace)
    file_mb: int = 16            # largest file it may write, its stdout/stderr included (RLIMIT_FSIZE)
    open_files: int = 64         # RLIMIT_NOFILE
    output_bytes: int = 4096     # stdout/stderr kept per program (head and tail); the middle is cut with a note
    python: str = sys.executable # interpreter that runs the program (run with -I -S: standard library only)
    namespaces: bool = True      # layer 2 (user, network and PID namespaces, unshare(2) in the bootstrap)
    landlock: bool = True        # layer 4 (filesystem, TCP and signal restrictions)
    guard: bool = True           # layer 5 (the Python audit hook)
    pids_cgroup: bool = True     # cap processes with a pids cgroup where one is writable (else RLIMIT_NPROC)
    strict: bool = True          # a requested kernel layer that is unavailable is an error, not a downgrade


@dataclass
class Result:
    status: str                  # 'ok' (exit 0), 'error' (nonzero exit), 'timeout', 'killed' (by a signal)
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    layers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SandboxUnavailable(ValueError):
    """A requested isolation layer cannot be set up on this machine; the message says how to proceed.
    (A ValueError like the other configuration errors, so `flywheel` reports it in one line.)"""


CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # cgroup v1 pids hierarchy, cgroup v2 unified


def _pids_cgroup_base() -> str | None:
    """A folder under which this process may create pids cgroups, or None (typical when not root)."""
    for root in CGROUP_ROOTS:
        v2 = root == "/sys/fs/cgroup"
        if v2 and "pids" not in _read_text(os.path.join(root, "cgroup.controllers")).split():
            continue
        if not v2 and not os.path.isdir(root):
            continue
        base = os.path.join(root, "flywheel-sandbox")
        try:
            if v2:  # the controller must be enabled for the children of root and of base
                _write_text(os.path.join(root, "cgroup.subtree_control"), "+pids")
            os.makedirs(base, exist_ok=True)
            if v2:
                _write_text(os.path.join(base, "cgroup.subtree_control"), "+pids")
            probe_dir = tempfile.mkdtemp(dir=base)
            os.rmdir(probe_dir)
            return base
        except OSError:
            continue
    return None


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@functools.lru_cache(maxsize=None)
def probe(python: str = sys.executable) -> dict:
    """What this machine offers, found once per interpreter: {'namespaces': bool, 'landlock': ABI (0 = none),
    'pids_cgroup': base folder or None, 'root': bool}."""
    abi = 0
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        abi = max(0, libc.syscall(444, None, 0, 1))  # landlock_create_ruleset(NULL, 0, VERSION)
    bare = Limits(python=python, landlock=False, guard=False, strict=False, wall_s=30)
    r = _run("pass", bare, namespaces=True, landlock=False, cgroup=None)
    return {"namespaces": r.ok, "namespaces_error": r.stderr.strip()[-300:], "landlock": abi,
            "pids_cgroup": _pids_cgroup_base(), "root": os.geteuid() == 0}


def layers_for(limits: Limits) -> tuple[dict, tuple[str, ...]]:
    """What `limits` gets on this machine: the switches for the bootstrap, and the names of the layers."""
    found = probe(limits.python)
    use = {"namespaces": False, "landlock": False, "cgroup": None}
    layers = ["process", "rlimits"]
    if limits.namespaces:
        if found["namespaces"]:
            use["namespaces"] = True
            layers.append("namespaces")
        elif limits.strict:
            raise SandboxUnavailable(
                f"sandbox: cannot create user/network/PID namespaces here ({found['namespaces_error'] or 'failed'}); "
                "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=0, "
                "user.max_user_namespaces=0, or a container's seccomp profile). Enable them, or set "
                "namespaces: false (no network isolation but the audit hook's) or strict: false.")
    if limits.pids_cgroup and found["pids_cgroup"]:
        use["cgroup"] = found["pids_cgroup"]
        layers.append("pids-cgroup")
    elif found["root"]:
        if limits.strict:
            raise SandboxUnavailable(
                "sandbox: running as root without a writable pids cgroup, so the process limit cannot be "
                "enforced (RLIMIT_NPROC does not bind root). Run the verifier as a non-root user, give it a "
                "writable pids cgroup (/sys/fs/cgroup), or set strict: false.")
    else:
        layers.append("rlimit-nproc")
    if limits.landlock:
        if found["landlock"] >= 1:
            use["landlock"] = True
            layers.append(f"landlock-abi{found['landlock']}")
        elif limits.strict:
            raise SandboxUnavailable(
                "sandbox: Landlock is not available (Linux >= 5.13 with landlock in the `lsm=` boot list). "
                "Set landlock: false (writes outside the folder are then stopped by the audit hook only) or "
                "strict: false to run with the layers available.")
    if limits.guard:
        layers.append("audit-hook")
    return use, tuple(layers)


def _clean_env(workdir: str) -> dict[str, str]:
    # Nothing of ours is inherited: API keys, tokens, cloud credentials stay in the verifier's process.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def _read(path: str, limit: int) -> str:
    """The file, or its first and last `limit // 2` bytes with a note between (the tail holds the traceback)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= limit:
            return f.read().decode("utf-8", "replace")
        head = f.read(limit // 2)
        f.seek(size - limit // 2)
        tail = f.read()
    cut = size - len(head) - len(tail)
    return (head.decode("utf-8", "replace") + f"\n[... {cut} bytes cut by the sandbox ...]\n"
            + tail.decode("utf-8", "replace"))


def run_python(program: str, limits: Limits = Limits(), files: dict[str, str] | None = None) -> Result:
    """Run `program` (Python source) in a fresh sandbox; `files` are extra files written beside it."""
    use, layers = layers_for(limits)
    r = _run(program, limits, use["namespaces"], use["landlock"], use["cgroup"], files)
    r.layers = layers
    return r


def _run(program: str, limits: Limits, namespaces: bool, landlock: bool, cgroup: str | None,
         files: dict[str, str] | None = None) -> Result:
    workdir = tempfile.mkdtemp(prefix="flywheel-sandbox-")
    cg = tempfile.mkdtemp(dir=cgroup) if cgroup else ""
    try:
        with open(os.path.join(workdir, "program.py"), "w") as f:
            f.write(program)
        for name, text in (files or {}).items():
            with open(os.path.join(workdir, name), "w") as f:
                f.write(text)
        if cg:
            _write_text(os.path.join(cg, "pids.max"), str(limits.processes + 1))  # + the waiting bootstrap
        mb = 1024 * 1024
        argv = [limits.python, "-I", "-S", "-c", BOOT, workdir, os.path.join(cg, "cgroup.procs") if cg else "",
                str(limits.cpu_s), str(limits.memory_mb * mb), "0" if cg else str(limits.processes),
                str(limits.file_mb * mb), str(limits.open_files), str(int(namespaces)), str(int(landlock)),
                str(int(limits.guard))]
        out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
        t0 = time.perf_counter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=workdir, env=_clean_env(workdir), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
        try:
            rc = _wait(proc, limits.wall_s)
            status = "timeout" if rc is None else "ok" if rc == 0 else "killed" if rc < 0 else "error"
        finally:
            # The session's whole process group, also after a normal exit (a child it left running). With
            # namespaces, the program is PID 1 of its namespace: when it dies, the kernel kills the rest.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = proc.wait()
        seconds = time.perf_counter() - t0
        return Result(status, rc, _read(out_path, limits.output_bytes), _read(err_path, limits.output_bytes),
                      seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if cg:
            _remove_cgroup(cg)


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """The exit code, or None after `timeout` seconds. Wakes up the moment the process exits (a pidfd):
    `Popen.wait(timeout)` polls with sleeps of up to 50 ms, which cost more than the whole program here."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:  # already reaped, or pidfds not supported by this kernel
            fd = None
        if fd is not None:
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
            return proc.wait() if ready else None
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _remove_cgroup(cg: str) -> None:
    # A cgroup can be removed once its processes are gone; a PID namespace's are reaped asynchronously.
    for _ in range(100):
        try:
            os.rmdir(cg)
            return
        except OSError:
            try:  # processes that outlived the killpg (they left the process group): kill them by cgroup
                for pid in _read_text(os.path.join(cg, "cgroup.procs")).split():
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
