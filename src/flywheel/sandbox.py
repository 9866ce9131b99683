"""Run an untrusted Python program (a model's candidate answer) in a sandbox.

    from flywheel.sandbox import Limits, run_python
    r = run_python("print(sum(range(10)))", Limits(wall_s=2))
    r.status, r.stdout        # ('ok', '45\n')

The model writes the code, so the code is adversarial by default: a loop that never ends, a fork bomb, a
memory bomb, a write to `~/.bashrc`, a `chmod u+s` of a host binary, a connection to a host Unix socket, a
read of `AWS_SECRET_ACCESS_KEY`, a kill of the verifier. Each program runs in layers, outermost first:

1. **Its own process and session**, with a scrubbed environment (`PATH`, `LANG`, `HOME`, `TMPDIR` only: no
   secret of ours reaches it) and stdin closed. Its stdout, stderr and result channel are pipes this
   process opened before the program started and reads itself, with a cap on each (nothing the program
   can remove, replace or relink). The wall-clock timeout kills the whole process group.
2. **Linux namespaces**, entered by the bootstrap (`unshare(2)`, then a fork): a user namespace (its root
   is mapped to our own uid: no new privilege outside), a network namespace with nothing but a downed
   loopback, IPC, UTS and cgroup namespaces, a PID namespace whose first process runs the program (it cannot
   see or signal any process outside; when it dies the kernel kills every process it started), and a
   **mount namespace with a private, empty root**: a small read-only tmpfs holding read-only binds of only
   what the interpreter needs (`/usr`, `/lib*`, the Python installation, `/dev/null` and friends) and the
   program's folder, itself a fresh size-capped tmpfs. `pivot_root(2)` then detaches the host's tree: no
   host path outside that list exists for the program (no `/tmp`, `/run`, `/home`, `/proc`, no host Unix
   socket), and what is listed is read-only. Then every capability is dropped (bounding set included).
3. **Limits**: rlimits set before the program runs (CPU seconds, address space, file size, open files, no
   core dumps) and a process count: a `pids` cgroup with `pids.max` where one is writable (needed when
   running as root, whom `RLIMIT_NPROC` does not bind), else `RLIMIT_NPROC`, which in the sandbox's own
   user namespace counts only its own processes.
4. **Landlock** (Linux >= 5.13, unprivileged): the program may write only beneath its directory and read
   only there and in the Python installation and system libraries; TCP bind/connect is denied (ABI >= 4),
   and so are signals and abstract Unix sockets reaching outside (ABI >= 6).
5. **seccomp** (a BPF filter compiled once by libseccomp in the verifier, loaded by the bootstrap last):
   `socket(2)` of any family, every call that changes file metadata (chmod, chown, utime, xattr families),
   mounts, new namespaces (`unshare`, `setns`, `clone` with namespace flags; `clone3` answers ENOSYS so
   libc falls back to `clone`), `ptrace`, `io_uring`, `bpf`, `perf_event_open`, keyrings, file handles and
   module loading fail with EPERM, whatever calls them (the interpreter, ctypes, a spawned binary).
6. **An audit hook** (PEP 578) as the innermost, Python-level guard: it refuses sockets, new processes,
   signals, `ctypes`, and writes, renames and deletions outside the directory, with a readable error.

Layers 2, 4, 5 and the process cap depend on the kernel: `probe()` finds out once which are available, and
`Limits.strict` (default True) makes a missing one an error rather than a silent downgrade. Layer 6 alone is
not a security boundary (C code bypasses it: the bootstrap's own `ctypes` is reachable from the program);
layers 1-5 are the kernel's. What is *not* contained: CPU and memory bandwidth (the program competes with
its neighbours for up to `wall_s`), and kernel bugs reachable through the system calls left open. For
hostile multi-tenant workloads use a VM or gVisor sandbox (e.g. SandboxFusion) behind the same
`run_python` interface. docs/verifiers.md has the threat model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

# The bootstrap runs in the child (`python -I -S -c BOOT CONFIG_JSON`) before the program: it reads its
# inputs, joins the pids cgroup, enters the namespaces and the private root, sets the rlimits, applies
# Landlock, drops capabilities, loads the seccomp filter, installs the audit hook, then executes
# `program.py` and, when asked, evaluates the verifier's probe expressions after it. `-I` ignores PYTHON*
# variables, the user site and the cwd on sys.path; `-S` skips `site` (no site-packages: candidate programs
# get the standard library only, and start in ~10 ms instead of ~35 ms here, where the virtualenv's .pth
# files make `site` slow). Any setup step that fails exits 125 with "sandbox: <step> failed: <why>".
BOOT = r'''
import ctypes, json, os, resource, sys
c = json.loads(sys.argv[1])
wd = c["wd"]
libc = ctypes.CDLL(None, use_errno=True)
def ok(r, what):
    if r != 0:
        os.write(2, ("sandbox: %s failed: %s\n" % (what, os.strerror(ctypes.get_errno()))).encode())
        os._exit(125)
if c["cgroup"]:
    with open(c["cgroup"], "w") as f:
        f.write(str(os.getpid()))
# Inputs are read now, before the program can touch its folder: the program's source and the probes.
src = open(os.path.join(wd, "program.py")).read()
probes = None
if c["channel"] >= 0:
    with open(c["probes"]) as f:
        probes = json.load(f)
if c["ns"]:
    uid, gid = os.getuid(), os.getgid()
    # CLONE_NEWUSER | NEWNET | NEWPID | NEWIPC | NEWUTS | NEWCGROUP
    ok(libc.unshare(0x10000000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000 | 0x02000000),
       "unshare(user, net, pid, ipc, uts, cgroup)")
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
    # The private root: a read-only tmpfs with read-only binds of what the interpreter needs, the program's
    # folder a fresh tmpfs of disk_kb, and the host's tree detached by pivot_root.
    files = {n: open(os.path.join(wd, n), "rb").read() for n in os.listdir(wd)}
    ok(libc.unshare(0x00020000), "unshare(mount)")
    NOSUID, NODEV, RDONLY, REMOUNT, BIND, REC, PRIVATE = 2, 4, 1, 32, 4096, 16384, 1 << 18
    def mount(what, where, fstype, flags, data=None):
        enc = lambda s: s.encode() if s is not None else None
        ok(libc.mount(enc(what), enc(where), enc(fstype), flags, enc(data)), "mount " + where)
    mount(None, "/", None, REC | PRIVATE)
    root = c["root"]
    mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=1m,nr_inodes=4096,mode=755")
    ro = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime",
          sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    done = []
    for p in sorted(set(ro), key=len):
        if not os.path.lexists(p) or any(p == d or p.startswith(d + "/") for d in done):
            continue
        done.append(p)
        os.makedirs(root + os.path.dirname(p), exist_ok=True)
        if os.path.islink(p):
            os.symlink(os.readlink(p), root + p)
            continue
        if os.path.isdir(p):
            os.makedirs(root + p, exist_ok=True)
        else:
            open(root + p, "w").close()
        mount(p, root + p, None, BIND)
        # A remount must keep the flags the kernel locked on the original (nosuid, nodev, noexec, atime).
        st = os.statvfs(p).f_flag
        keep = (st & (2 | 4 | 8 | 1024 | 2048)) | ((1 << 21) if st & 4096 else 0)
        mount(None, root + p, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | keep)
    os.makedirs(root + "/dev", exist_ok=True)
    for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"):
        if os.path.exists(p):
            open(root + p, "w").close()
            mount(p, root + p, None, BIND)
    os.makedirs(root + wd)
    mount("tmpfs", root + wd, "tmpfs", NOSUID | NODEV, "size=%dk,mode=700" % c["disk_kb"])
    for n, b in files.items():
        with open(os.path.join(root + wd, n), "wb") as f:
            f.write(b)
    del files
    mount(None, root, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)
    os.chdir(root)
    ok(libc.syscall(c["pivot_root"], b".", b"."), "pivot_root")   # the old root is stacked under the new
    ok(libc.umount2(b".", 2), "detach the host's root")             # MNT_DETACH
    os.chdir(wd)
for lim, v in ((resource.RLIMIT_CPU, c["cpu"]), (resource.RLIMIT_AS, c["mem"]), (resource.RLIMIT_FSIZE, c["fsize"]),
               (resource.RLIMIT_NOFILE, c["nofile"]), (resource.RLIMIT_CORE, 0)) + (((resource.RLIMIT_NPROC, c["nproc"]),) if c["nproc"] else ()):
    resource.setrlimit(lim, (v, v + (1 if lim == resource.RLIMIT_CPU else 0)))
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required by Landlock and seccomp; no setuid gain on exec
if c["landlock"]:
    def sc(*a):
        r = libc.syscall(*a)
        if r < 0:
            ok(1, "landlock syscall %d" % a[0])
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
    sc(446, rs, 0)
if c["ns"]:
    # No capability left in the namespace, and none regained by exec: the bounding set is emptied too.
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP; EINVAL past the last capability
            break
    libc.prctl(47, 4, 0, 0, 0)                   # PR_CAP_AMBIENT_CLEAR_ALL
    hdr, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    ok(libc.capset(hdr, data), "capset")
if c["seccomp"]:
    prog = ctypes.create_string_buffer(bytes.fromhex(c["seccomp"]))
    class FPROG(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    ok(libc.prctl(22, 2, ctypes.byref(FPROG(len(prog.raw) // 8, ctypes.addressof(prog))), 0, 0), "seccomp")
if c["guard"]:
    # Everything the hook needs is bound as a default argument and immutable, and the hook is deleted from
    # this module's namespace: the program (which can import __main__) has no handle to change it.
    def _hook(event, args, _wd=wd + os.sep, _ap=os.path.abspath, _dec=os.fsdecode,
              _W=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND,
              _PATHS=frozenset(("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate",
                                "shutil.rmtree", "shutil.copyfile", "shutil.move", "os.utime", "os.setxattr",
                                "os.removexattr")),
              _DENY=frozenset(("os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
                               "os.kill", "os.killpg", "subprocess.Popen", "os.symlink", "os.link", "os.chown",
                               "os.chflags", "os.lchflags", "pty.spawn")),
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
chan = c["channel"]
del c, ok, libc
sys.argv = ["program.py"]
# The verifier's probes: expressions such as `f(7)`, evaluated after the program, each value sent as one
# JSON line on the result channel. Only plain values cross (exact built-in types, tagged where JSON has
# none); the verifier, in a process this program never ran in, compares them with the expected values,
# which are never sent here. The functions are bound before the program runs, so that replacing `eval`,
# `json` or `os.write` does not change what is sent; but nothing here is a boundary: anything the program
# does to this code only loses it points.
def _enc(v, d=0, _t=type, _fin=float("inf"), _r=repr, _h=bytes.hex):
    t = _t(v)
    if d > 64:
        raise ValueError("nested deeper than 64 levels")
    if v is None or t is bool or t is int or t is str:
        return v
    if t is float:
        return v if -_fin < v < _fin else {"float": _r(v)}
    if t is list:
        return [_enc(x, d + 1) for x in v]
    if t is tuple or t is set or t is frozenset:
        return {t.__name__: [_enc(x, d + 1) for x in v]}
    if t is dict:
        return {"dict": [[_enc(k, d + 1), _enc(x, d + 1)] for k, x in v.items()]}
    if t is bytes:
        return {"bytes": _h(v)}
    if t is complex:
        return {"complex": [_enc(v.real), _enc(v.imag)]}
    raise TypeError("a %s is not a plain value (None, bool, int, float, complex, str, bytes, list, tuple, dict, "
                    "set, frozenset)" % t.__name__)
def _answer(probes, g, chan, _eval=eval, _dumps=json.dumps, _write=os.write, _enc=_enc, _t=type, _s=str):
    for i, p in enumerate(probes):
        try:
            line = _dumps({"i": i, "v": _enc(_eval(p, g))})
        except BaseException as e:
            line = _dumps({"i": i, "e": "%s: %s" % (_t(e).__name__, _s(e)[:300])})
        b = (line + "\n").encode()
        while b:
            b = b[_write(chan, b):]
g = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(src, "program.py", "exec"), g)
if probes is not None:
    _answer(probes, g, chan)
'''


@dataclass(frozen=True)
class Limits:
    """What one sandboxed program may use. The defaults suit unit tests of short functions."""

    wall_s: float = 5.0          # wall-clock seconds before the process group is killed
    cpu_s: int = 4               # CPU seconds (RLIMIT_CPU: SIGXCPU, then SIGKILL a second later; as PID 1 of its
                                 # namespace the program ignores SIGXCPU, so the SIGKILL ends it)
    memory_mb: int = 512         # address space (RLIMIT_AS); Python itself needs ~20 MB
    processes: int = 8           # processes at once (pids cgroup, or RLIMIT_NPROC in its user namespace)
    file_mb: int = 16            # largest file it may write (RLIMIT_FSIZE)
    disk_mb: int = 32            # size of its folder, a private tmpfs (with namespaces; without, the host disk)
    open_files: int = 64         # RLIMIT_NOFILE
    output_bytes: int = 4096     # stdout/stderr kept per program (head and tail); the middle is cut with a note
    result_bytes: int = 1 << 20  # most bytes read from the result channel (the probes' values); more is an error
    python: str = sys.executable # interpreter that runs the program (run with -I -S: standard library only)
    namespaces: bool = True      # layer 2 (user, network, PID, IPC, UTS, cgroup and mount namespaces, private root)
    landlock: bool = True        # layer 4 (filesystem, TCP and signal restrictions)
    seccomp: bool = True         # layer 5 (system-call filter: sockets, file metadata, mounts, namespaces, ...)
    guard: bool = True           # layer 6 (the Python audit hook)
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
    channel: bytes = b""         # what the program wrote on its result channel (run_python(..., probes=...))
    channel_overflow: bool = False  # it wrote more than Limits.result_bytes; `channel` holds the first bytes

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SandboxUnavailable(ValueError):
    """A requested isolation layer cannot be set up on this machine; the message says how to proceed.
    (A ValueError like the other configuration errors, so `flywheel` reports it in one line.)"""


CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")  # cgroup v1 pids hierarchy, cgroup v2 unified
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}   # pivot_root(2) has no libc wrapper


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


# --- layer 5: the seccomp filter ------------------------------------------------------------------------
# Denied with EPERM. File metadata: the private root already makes every host path read-only (EROFS), so
# this is the second wall, and it also keeps the program from making a setuid file in its own folder.
SECCOMP_DENY = (
    "socket",                                                               # any family: no Unix sockets
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat", "file_setattr",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "name_to_handle_at", "open_by_handle_at",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",  # io_uring's operations bypass seccomp
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog",
)
# Calls newer than the libseccomp of some distributions (2.5.4 in Debian 12): numbered in the table every
# architecture but alpha shares since Linux 5.1.
NEW_SYSCALLS = {"setxattrat": 463, "removexattrat": 466, "open_tree_attr": 467, "file_setattr": 469}
NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=None)
def seccomp_filter() -> str:
    """The BPF program of layer 5 as hex, built once with libseccomp; raises OSError if it cannot be."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ctx = lib.seccomp_init(allow)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        def add(action: int, name: str, *cmp: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                nr = NEW_SYSCALLS.get(name, -1) if platform.machine() in PIVOT_ROOT else -1
            if nr < 0:
                return  # not a call on this architecture
            arr = (_ArgCmp * max(1, len(cmp)))(*cmp)
            if lib.seccomp_rule_add_array(ctx, action, nr, len(cmp), arr) != 0:
                raise OSError(f"seccomp rule for {name} failed")

        for name in SECCOMP_DENY:
            add(eperm, name)
        for flag in NS_FLAGS:  # clone(flags, ...) with any namespace flag; SCMP_CMP_MASKED_EQ = 7
            add(eperm, "clone", _ArgCmp(0, 7, flag, flag))
        add(enosys, "clone3")  # its flags are behind a pointer seccomp cannot read; libc falls back to clone
        with tempfile.TemporaryFile() as f:
            if lib.seccomp_export_bpf(ctx, f.fileno()) != 0:
                raise OSError("seccomp_export_bpf failed")
            f.seek(0)
            return f.read().hex()
    finally:
        lib.seccomp_release(ctx)


@functools.lru_cache(maxsize=None)
def probe(python: str = sys.executable) -> dict:
    """What this machine offers, found once per interpreter: {'namespaces': bool, 'landlock': ABI (0 = none),
    'seccomp': bool, 'pids_cgroup': base folder or None, 'root': bool}, with the reasons of what failed."""
    abi = 0
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        abi = max(0, libc.syscall(444, None, 0, 1))  # landlock_create_ruleset(NULL, 0, VERSION)
    try:
        bpf, bpf_error = seccomp_filter(), ""
    except (OSError, AttributeError) as err:  # no libseccomp, or one without seccomp_export_bpf
        bpf, bpf_error = "", str(err)
    bare = Limits(python=python, landlock=False, seccomp=False, guard=False, strict=False, wall_s=30)
    ns = _run("pass", bare, {"namespaces": True, "landlock": False, "seccomp": "", "cgroup": None})
    sec = _run("pass", bare, {"namespaces": False, "landlock": False, "seccomp": bpf, "cgroup": None}) if bpf else None
    return {"namespaces": ns.ok, "namespaces_error": ns.stderr.strip()[-300:], "landlock": abi,
            "seccomp": bool(sec and sec.ok), "seccomp_error": bpf_error or (sec.stderr.strip()[-300:] if sec else ""),
            "pids_cgroup": _pids_cgroup_base(), "root": os.geteuid() == 0}


def layers_for(limits: Limits) -> tuple[dict, tuple[str, ...]]:
    """What `limits` gets on this machine: the switches for the bootstrap, and the names of the layers."""
    found = probe(limits.python)
    use = {"namespaces": False, "landlock": False, "seccomp": "", "cgroup": None}
    layers = ["process", "pipes", "rlimits"]
    if limits.namespaces:
        if found["namespaces"]:
            use["namespaces"] = True
            layers += ["namespaces", "private-root"]
        elif limits.strict:
            raise SandboxUnavailable(
                f"sandbox: cannot create user/network/PID/mount namespaces and the private root here "
                f"({found['namespaces_error'] or 'failed'}); unprivileged user namespaces may be disabled "
                "(sysctl kernel.unprivileged_userns_clone=0, user.max_user_namespaces=0, an AppArmor "
                "restriction, or a container's seccomp profile). Enable them, or set namespaces: false (no "
                "private file-system view: host paths are then guarded by Landlock and seccomp only) or strict: false.")
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
                "Set landlock: false (writes outside the folder are then stopped by the other layers) or "
                "strict: false to run with the layers available.")
    if limits.seccomp:
        if found["seccomp"]:
            use["seccomp"] = seccomp_filter()
            layers.append("seccomp")
        elif limits.strict:
            raise SandboxUnavailable(
                f"sandbox: the seccomp filter cannot be built or loaded here ({found['seccomp_error'] or 'failed'}); "
                "it needs libseccomp (apt-get install libseccomp2) and a kernel with seccomp filters. Install "
                "it, or set seccomp: false or strict: false.")
    if limits.guard:
        layers.append("audit-hook")
    return use, tuple(layers)


def _clean_env(workdir: str) -> dict[str, str]:
    # Nothing of ours is inherited: API keys, tokens, cloud credentials stay in the verifier's process.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


class _HeadTail:
    """The first and last `limit // 2` bytes of a stream of any length, in bounded memory."""

    def __init__(self, limit: int):
        self.half, self.head, self.tail, self.total = max(1, limit // 2), bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[:-self.half]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        note = f"\n[... {cut} bytes cut by the sandbox ...]\n" if cut else ""
        return self.head.decode("utf-8", "replace") + note + self.tail.decode("utf-8", "replace")


class _Capped:
    """The first `limit` bytes of a stream; the rest is read and counted, not kept."""

    def __init__(self, limit: int):
        self.limit, self.data, self.overflow = limit, bytearray(), False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[:max(0, room)]
        self.overflow |= len(chunk) > room


def run_python(program: str, limits: Limits = Limits(), files: dict[str, str] | None = None,
               probes: list[str] | None = None) -> Result:
    """Run `program` (Python source) in a fresh sandbox; `files` are extra files written beside it. With
    `probes` (Python expressions), each is evaluated after the program and its value, as strict JSON, comes
    back in `Result.channel` (one line `{"i": n, "v": value}` or `{"i": n, "e": error}` per probe)."""
    use, layers = layers_for(limits)
    r = _run(program, limits, use, files, probes)
    r.layers = layers
    return r


def _run(program: str, limits: Limits, use: dict, files: dict[str, str] | None = None,
         probes: list[str] | None = None) -> Result:
    box = tempfile.mkdtemp(prefix="flywheel-sandbox-")
    wd, root = os.path.join(box, "work"), os.path.join(box, "root")
    cg = tempfile.mkdtemp(dir=use["cgroup"]) if use["cgroup"] else ""
    chan_r = chan_w = -1
    try:
        os.mkdir(wd, 0o700)
        os.mkdir(root, 0o700)
        with open(os.path.join(wd, "program.py"), "w") as f:
            f.write(program)
        for name, text in (files or {}).items():
            with open(os.path.join(wd, name), "w") as f:
                f.write(text)
        if probes is not None:
            with open(os.path.join(box, "probes.json"), "w") as f:
                json.dump(probes, f)
            chan_r, chan_w = os.pipe()
        if cg:
            _write_text(os.path.join(cg, "pids.max"), str(limits.processes + 1))  # + the waiting bootstrap
        mb = 1024 * 1024
        conf = {"wd": wd, "root": root, "probes": os.path.join(box, "probes.json"), "channel": chan_w,
                "cgroup": os.path.join(cg, "cgroup.procs") if cg else "", "cpu": limits.cpu_s,
                "mem": limits.memory_mb * mb, "nproc": 0 if cg else limits.processes, "fsize": limits.file_mb * mb,
                "nofile": limits.open_files, "disk_kb": limits.disk_mb * 1024, "ns": use["namespaces"],
                "landlock": use["landlock"], "seccomp": use["seccomp"], "guard": limits.guard,
                "pivot_root": PIVOT_ROOT.get(platform.machine(), -1)}
        argv = [limits.python, "-I", "-S", "-c", BOOT, json.dumps(conf)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=wd, env=_clean_env(wd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                close_fds=True, pass_fds=(chan_w,) if chan_w >= 0 else ())
        if chan_w >= 0:
            os.close(chan_w)  # the program holds the only write end now: EOF when it is gone
            chan_w = -1
        out, err, chan = _HeadTail(limits.output_bytes), _HeadTail(limits.output_bytes), _Capped(limits.result_bytes)
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        if chan_r >= 0:
            streams[chan_r] = chan
        try:
            timed_out = _collect(proc, streams, limits.wall_s)
        finally:
            # The session's whole process group, also after a normal exit (a child it left running). With
            # namespaces, the program is PID 1 of its namespace: when it dies, the kernel kills the rest.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        status = "timeout" if timed_out else "ok" if rc == 0 else "killed" if rc < 0 else "error"
        return Result(status, rc, out.text(), err.text(), time.perf_counter() - t0,
                      channel=bytes(chan.data), channel_overflow=chan.overflow)
    finally:
        for fd in (chan_r, chan_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(box, ignore_errors=True)
        if cg:
            _remove_cgroup(cg)


def _collect(proc: subprocess.Popen, streams: dict, wall_s: float) -> bool:
    """Read every stream into its buffer until the program exits and the streams close, or `wall_s` passes
    (True: timed out). Wakes up on output and the moment the process exits (a pidfd): `Popen.wait(timeout)`
    polls with sleeps of up to 50 ms, which cost more than the whole program here."""
    sel = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        except OSError:  # pidfds not supported by this kernel
            pidfd = None
    deadline, exited, open_streams = time.monotonic() + wall_s, False, len(streams)
    try:
        while open_streams or not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                return not exited
            events = sel.select(min(left, 0.05) if pidfd is None else left)
            if pidfd is None and not exited and proc.poll() is not None:
                events.append((selectors.SelectorKey(None, -1, 0, "exit"), 0))
            for key, _ in events:
                if key.data == "exit":
                    exited = True
                    if pidfd is not None:
                        sel.unregister(pidfd)
                    # Whatever is still in the pipes is read; a process that escaped the group and keeps
                    # them open (only possible without the PID namespace) gets 0.2 s more, not the rest.
                    deadline = min(deadline, time.monotonic() + 0.2)
                    continue
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if chunk:
                    streams[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
                    open_streams -= 1
        return False
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


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
