"""The sandbox's worker process (stdlib only; run as ``python -I -S _sandbox_worker.py``).

Seed context: the execution harnesses of HumanEval ("Evaluating Large Language Models Trained on Code",
arXiv 2107.03374) and EvalPlus (arXiv 2305.01210) run the candidate *and its tests* in one forked process
behind an in-process "reliability guard", so whatever the tests decide, the candidate can overwrite. Here
the isolation is the operating system's, and the verdict is computed where the candidate cannot reach.

Per worker (once): root is dropped to ``nobody``; descriptors to the standard-library folders are opened
first and ``sys.path`` points through them (``/proc/self/fd/N``), so *every* stdlib module, codec and
extension imports after the drop; a user + network namespace is entered (no network at all); the worker
becomes non-dumpable (nothing it forks can ptrace it or read its memory) and a child subreaper (no
descendant escapes the post-job sweep by ``setsid`` or double forks).

Per job, **one process**: cloned straight into a new mount + PID namespace (its PID 1) with a read-only
filesystem, a size-capped tmpfs on ``/tmp`` and a fresh ``/proc``; it restricts itself with Landlock
(writes only in the work dir, no TCP, signals only inside the job) where the kernel has it, takes rlimits,
drops every capability, sets ``no_new_privs`` and a seccomp filter (no ptrace / process_vm_*, no
AF_INET*/netlink/packet sockets, no mount/unshare/io_uring/bpf; a SIGKILL at itself, its group or its
parent ends it), and runs the program.

* ``mode = "check"``: the program process runs the candidate's code and then only answers calls; **the
  worker** — trusted, non-dumpable, a process the candidate never shares memory with — runs the task's
  trusted context (its prompt) and tests in a fresh namespace, with the entry point (and any other
  function the program defines) bound to proxies that call into the program process. Arguments and
  results cross as pickles the worker decodes with a loader that builds only plain values (numbers,
  strings, bytes, lists, tuples, dicts, sets, a few stdlib value types), so a result's own ``__eq__`` never
  runs where the verdict is made. Test code is trusted: it runs with the worker's rights (a test that
  changes a module's global state changes it for the worker's later jobs), under the job's wall clock.
* ``mode = "program"``: the program process runs a whole program; "passed" means it returned normally and
  said so — a claim the program itself can fake (there is no separate checker for an opaque program).

Where namespaces are unavailable (``isolation = rlimits``) the same process, rlimits, Landlock, seccomp and
the subreaper sweep remain; the host's ``/proc`` stays visible. Protocol on the worker's stdin/stdout
(moved to descriptors 100/101; 0 and 1 are /dev/null): 4-byte big-endian length + JSON, one job in, one
result out.
"""

# ruff: noqa: E402, SIM105  — the module list is imported on purpose before privileges are dropped
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import struct
import sys
import time

# Imported now so every job's fork inherits them ready: what benchmark programs import (HumanEval: typing, math,
# random, copy, string, collections, re, hashlib; MBPP adds heapq, itertools, ...). Anything else imports on
# demand through the descriptors opened in `_pin_stdlib_paths`; a longer list makes every fork slower.
PREIMPORT = [
    "abc",
    "array",
    "ast",
    "base64",
    "binascii",
    "bisect",
    "builtins",
    "cmath",
    "codecs",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "ctypes",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "errno",
    "fnmatch",
    "fractions",
    "functools",
    "gc",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "keyword",
    "math",
    "numbers",
    "operator",
    "pickle",
    "posixpath",
    "random",
    "re",
    "resource",
    "signal",
    "statistics",
    "string",
    "struct",
    "sys",
    "textwrap",
    "threading",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "warnings",
    "weakref",
    "zlib",
    "encodings.idna",
]
for _name in PREIMPORT:
    try:
        __import__(_name)
    except ImportError:  # pragma: no cover - a minimal Python build
        pass
import errno
import io
import pickle
import resource
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 1 << 14, 1 << 18, 2, 4
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 0x1, 0x8000, -100, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
PR_SET_CHILD_SUBREAPER, PR_CAPBSET_DROP = 36, 24
NOBODY = 65534
FD_CALLS, FD_REPLIES, FD_PATHS = 3, 4, 40  # program process: calls in, replies out; stdlib dir fds from 40
EXIT_MEMORY, EXIT_SETUP = 125, 120
LIBC = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def _readonly_root() -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = LIBC.syscall(
        SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    _check(ret, "mount_setattr / read-only")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# --- the standard library after the privilege drop -------------------------------------------------------
def _pin_stdlib_paths() -> list[int]:
    """Open every ``sys.path`` folder now and import through ``/proc/self/fd/N`` from then on.

    After dropping to ``nobody`` an interpreter installed under an unreadable folder (``/root/...``) cannot
    open its own library by path; a descriptor opened before the drop still reaches it (the files themselves
    are world-readable), so lazily imported modules — ``secrets``, ``sqlite3``, the ``idna`` codec — work.
    """
    import importlib

    fds, mapping = [], {}
    for entry in list(sys.path):
        if not entry or not os.path.isdir(entry):
            continue
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        target = FD_PATHS + len(fds)
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
        fds.append(target)
        mapping[entry] = f"/proc/self/fd/{target}"

    def remap(path: str) -> str:
        for old, new in mapping.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old) :]
        return path

    sys.path[:] = [remap(p) for p in sys.path if p in mapping]
    for module in list(sys.modules.values()):  # packages already imported find their submodules there too
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [remap(p) for p in paths]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    return fds


def setup_worker(cfg: dict) -> dict:
    """Pin the stdlib, drop root, enter a user + network namespace; returns what was achieved."""
    info = {"isolation": "rlimits", "uid": os.geteuid(), "dropped": False, "network": "host"}
    info["stdlib_fds"] = _pin_stdlib_paths()
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and cfg.get("drop_privileges", True):
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # setuid cleared it; /proc/self/*_map must stay writable
        uid, gid = NOBODY, NOBODY
        info["dropped"] = True
    if cfg.get("isolation", "auto") in ("auto", "namespaces"):
        try:
            if cfg.get("_deny_namespaces"):  # tests: behave as on a kernel that refuses user namespaces
                raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER): Operation not permitted (simulated)")
            os.unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
            info["isolation"], info["network"] = "namespaces", "none (empty network namespace)"
        except OSError as exc:
            if cfg.get("isolation") == "namespaces":
                raise
            info["namespace_error"] = str(exc)
    LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no job can ptrace the worker or read its memory / descriptors
    LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of a job come back to us and are swept
    info["uid"] = uid
    info["landlock_abi"] = _landlock_abi()
    info["seccomp"] = _seccomp_supported()
    return info


# --- Landlock and seccomp (the program process) ------------------------------------------------------------
SYS_LL_CREATE, SYS_LL_ADD, SYS_LL_RESTRICT = 444, 445, 446


def _landlock_abi() -> int:
    abi = LIBC.syscall(SYS_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # ..._VERSION flag
    return max(0, int(abi))


def _landlock(workdir: str, abi: int) -> None:
    """Writes only beneath ``workdir`` (and to /dev/null); with ABI >= 4 no TCP; with ABI >= 6 signals and
    abstract unix sockets only inside this domain. Reads stay allowed (the filesystem is not hidden)."""
    if abi < 1:
        return
    write = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # WRITE_FILE, REMOVE_*, MAKE_*
    write |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
    net = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, no rule: none allowed
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = struct.pack("QQQ", write, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    buf = ctypes.create_string_buffer(attr, 24)
    ruleset = LIBC.syscall(SYS_LL_CREATE, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path, access in ((workdir, write), (os.devnull, (1 << 1) | (1 << 14 if abi >= 3 else 0))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
            ret = LIBC.syscall(SYS_LL_ADD, ruleset, ctypes.c_int(1), rule, ctypes.c_uint32(0))
            os.close(fd)
            _check(0 if ret == 0 else -1, f"landlock_add_rule {path}")
        LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _check(LIBC.syscall(SYS_LL_RESTRICT, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)


AUDIT_ARCH_X86_64 = 0xC000003E
# ptrace, process_vm_readv/writev, mount, umount2, pivot_root, unshare, setns, mount_setattr, open_tree,
# move_mount, fsopen, fsconfig, fsmount, fspick, io_uring_setup/enter/register, bpf, perf_event_open,
# userfaultfd, keyctl, add_key, request_key, kexec_load, init_module, finit_module
DENIED_X86_64 = [
    101,
    310,
    311,
    165,
    166,
    155,
    272,
    308,
    442,
    428,
    429,
    430,
    431,
    432,
    433,
    425,
    426,
    427,
    321,
    298,
    323,
    250,
    248,
    249,
    246,
    175,
    313,
]
SYS_SOCKET_X86_64, SYS_KILL_X86_64, AF_UNIX = 41, 62, 1


def _seccomp_supported() -> bool:
    import platform

    return platform.machine() == "x86_64"


def _seccomp() -> None:
    """A deny-list seccomp filter: EPERM for the syscalls above, EACCES for non-AF_UNIX sockets, and a
    SIGKILL sent to the program itself, its process group or its parent (the worker) ends the program at
    once — labelled ``killed_by_program`` — instead of reaching a process that the kernel would ignore
    (PID 1 of a namespace) or the worker."""
    if not _seccomp_supported():
        return
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    deny, deny_net = 0x00050000 | errno.EPERM, 0x00050000 | errno.EACCES
    targets = sorted({0, os.getpid(), os.getppid(), (-os.getpgid(0)) & 0xFFFFFFFF, 0xFFFFFFFF})
    n, m = len(DENIED_X86_64), len(targets)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH_X86_64), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    # layout (a jump from index i lands on i + 1 + offset), D = 5 + n:
    # [4: x32?][5..D-1: denied?][D: socket?][D+1: kill?][D+2: allow][D+3: ld arg0][D+4: unix?][D+5: allow]
    # [D+6: deny_net][D+7: ld arg1][D+8: sig 9?][D+9: allow][D+10: ld arg0][D+11..D+10+m: target?]
    # [D+11+m: allow][D+12+m: kill][D+13+m: deny]
    d = 5 + n
    deny_at = d + 13 + m
    prog.append((jge, deny_at - 5, 0, 0x40000000))  # x32 ABI -> deny
    for i, nr in enumerate(DENIED_X86_64):
        prog.append((jeq, deny_at - (5 + i) - 1, 0, nr))  # -> deny
    prog.append((jeq, 2, 0, SYS_SOCKET_X86_64))  # D -> D+3
    prog.append((jeq, 5, 0, SYS_KILL_X86_64))  # D+1 -> D+7
    prog.append((ret, 0, 0, allow))  # D+2
    prog.append((ld, 0, 0, 16))  # D+3: args[0] (domain), low 32 bits
    prog.append((jeq, 0, 1, AF_UNIX))  # D+4
    prog.append((ret, 0, 0, allow))  # D+5
    prog.append((ret, 0, 0, deny_net))  # D+6
    prog.append((ld, 0, 0, 24))  # D+7: args[1] (signal)
    prog.append((jeq, 1, 0, signal.SIGKILL))  # D+8 -> D+10
    prog.append((ret, 0, 0, allow))  # D+9
    prog.append((ld, 0, 0, 16))  # D+10: args[0] (pid), low 32 bits
    for i, pid in enumerate(targets):  # D+11+i -> D+12+m (kill)
        prog.append((jeq, m - i, 0, pid))
    prog.append((ret, 0, 0, allow))  # D+11+m
    prog.append((ret, 0, 0, kill))  # D+12+m
    prog.append((ret, 0, 0, deny))  # D+13+m
    assert len(prog) == deny_at + 1
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    filt = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(filt))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _check(LIBC.prctl(PR_SET_SECCOMP, 2, fbuf, 0, 0), "seccomp")


def _drop_capabilities() -> None:
    """No capabilities left (the program is root only inside its user namespace, and not even there)."""
    for cap in range(64):
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two __user_cap_data_struct of zeros
    hbuf, dbuf = ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24)
    LIBC.capset(hbuf, dbuf)  # a no-op where there is nothing to drop


def _guard(workdir: str) -> None:
    """The extra, escapable layer: an audit hook refusing process, network and outside-write events."""
    blocked = {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "subprocess.Popen",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.cdata",
        "os.putenv",
        "os.unsetenv",
    }
    root = os.path.realpath(workdir)

    def hook(event: str, args: tuple) -> None:
        if event in blocked:
            raise PermissionError(f"sandbox guard: {event} is not allowed")
        if event == "open" and len(args) >= 2 and isinstance(args[0], str):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            path = os.path.realpath(args[0])
            if writing and not (path == root or path.startswith(root + os.sep) or path == os.devnull):
                raise PermissionError(f"sandbox guard: writing {args[0]} outside the work dir")

    sys.addaudithook(hook)


def _limit(cfg: dict, cpu_limit: bool = True) -> None:
    mem = int(cfg["memory_mb"]) * 2**20
    fsize = int(cfg["file_size_mb"]) * 2**20
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1))] if cpu_limit else []
    limits += [
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"])),
        (resource.RLIMIT_NOFILE, (64, 64)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    for which, value in limits:
        resource.setrlimit(which, value)


# --- what a refusal of the sandbox looks like from inside ------------------------------------------------
_REFUSED_ERRNOS = {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTUNREACH,
    errno.EAFNOSUPPORT,
}


def refusal(exc: BaseException | None) -> str | None:
    """``what`` the sandbox refused when ``exc`` (or an exception it was raised from) is its refusal."""
    import socket

    seen = 0
    while exc is not None and seen < 8:
        seen += 1
        if isinstance(exc, PermissionError) and str(exc).startswith("sandbox guard:"):
            return str(exc)[len("sandbox guard: ") :]
        if isinstance(exc, socket.gaierror):
            return "network (name resolution)"
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in sys.stdlib_module_names:
            return f"import {exc.name}"
        if isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS:
            target = exc.filename if isinstance(exc.filename, str) else None
            if exc.errno == errno.EROFS:
                return f"write {target or '?'} (read-only filesystem)"
            if target is not None:
                return f"access {target} ({os.strerror(exc.errno)})"
            if exc.errno in (
                errno.EACCES,
                errno.ENETUNREACH,
                errno.ENETDOWN,
                errno.EHOSTUNREACH,
                errno.EAFNOSUPPORT,
            ):
                return f"network ({os.strerror(exc.errno)})"
            return f"operation not permitted ({exc})"[:200]
        exc = exc.__cause__ or exc.__context__
    return None


# --- framing of the worker <-> program channel ------------------------------------------------------------
def _send_frame(fd: int, data: bytes) -> None:
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _recv_frame(fd: int, limit: int = 64 * 2**20) -> bytes | None:
    def exact(n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    head = exact(4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > limit:
        raise ValueError(f"message of {size} bytes from the program exceeds {limit}")
    return exact(size)


class PlainUnpickler(pickle.Unpickler):
    """Builds plain values only: the opcodes for None/bool/int/float/str/bytes/list/tuple/dict/set/frozenset
    need no class; a few stdlib value types are allowed by name; any other class — the program's own, or an
    ``int`` subclass with its own ``__eq__`` — is refused, so nothing of the program runs in the checker."""

    ALLOWED = {
        ("builtins", "complex"),
        ("builtins", "range"),
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("builtins", "Ellipsis"),
        ("builtins", "NotImplemented"),
        ("fractions", "Fraction"),
        ("decimal", "Decimal"),
        ("collections", "OrderedDict"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a value of type {module}.{name} cannot be checked outside the program")


def _plain_loads(data: bytes):  # noqa: ANN202
    return PlainUnpickler(io.BytesIO(data)).load()


# --- the program process ---------------------------------------------------------------------------------
def _program_frames(exc: BaseException) -> None:
    """Print the program's traceback without the harness's frames."""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
        lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
        sys.stderr.write("Traceback (most recent call last):\n" + "".join(lines))
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a hostile exception must not break the reporting
        pass


def _error_message(exc: BaseException) -> bytes:
    try:
        text = str(exc)[:2000]
    except BaseException:  # noqa: BLE001
        text = "?"
    return pickle.dumps(("error", type(exc).__name__, text, refusal(exc)))


def _serve(ns: dict) -> None:
    """Answer the worker's calls until it hangs up."""
    while True:
        data = _recv_frame(FD_CALLS)
        if data is None:
            os._exit(0)
        _, name, args, kwargs = pickle.loads(data)
        try:
            value = ns[name](*args, **kwargs)
            reply = pickle.dumps(("ok", value), protocol=5)
        except MemoryError as exc:
            reply = _error_message(exc)
        except BaseException as exc:  # noqa: BLE001 - the candidate's failure, reported to the checker
            _program_frames(exc)
            reply = _error_message(exc)
        sys.stdout.flush()
        _send_frame(FD_REPLIES, reply)


def _program_process(job: dict, cfg: dict, workdir: str, keep: list[int]) -> None:
    """Runs in the program's process: descriptors, limits, no capabilities, seccomp, then the code."""
    try:
        os.closerange(5, FD_PATHS)
        os.closerange(FD_PATHS + len(keep), 1 << 16)
        LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc/self (the stdlib paths) stays readable
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
        _limit(cfg)
        _drop_capabilities()
        _seccomp()
        if cfg.get("guard", True):
            _guard(workdir)
        source = job.pop("program" if job["mode"] == "program" else "code")
        code = compile(source, "<program>", "exec")
        del source
        ns: dict = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(code, ns)  # noqa: S102 - the point
        sys.stdout.flush()
        if job["mode"] == "program":
            _send_frame(FD_REPLIES, pickle.dumps(("done",)))
            os._exit(0)
        names = [
            k for k, v in ns.items() if callable(v) and not isinstance(v, type) and not k.startswith("__")
        ]
        _send_frame(FD_REPLIES, pickle.dumps(("ready", names)))
        _serve(ns)
    except MemoryError as exc:
        os.write(2, b"MemoryError\n")
        try:
            _send_frame(FD_REPLIES, _error_message(exc))
        except BaseException:  # noqa: BLE001
            pass
        os._exit(EXIT_MEMORY)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        os._exit(code if code else 0)
    except BaseException as exc:  # noqa: BLE001 - report the program's own failure
        _program_frames(exc)
        try:
            _send_frame(FD_REPLIES, _error_message(exc))
        except BaseException:  # noqa: BLE001
            pass
        os._exit(1)


# --- the checker (in the worker) ----------------------------------------------------------------------------
class ProgramGone(BaseException):
    """The program process died or broke the protocol (a BaseException: tests' ``except Exception`` miss it)."""


class ProgramError(Exception):
    """The program raised an exception of its own type (its name and message, never the object)."""


def _raise_remote(reply: tuple, state: dict) -> None:
    import builtins

    _, name, text, refused = reply
    if refused and not state.get("refused"):
        state["refused"] = refused
    if name == "MemoryError":
        state["memory"] = True
    cls = getattr(builtins, str(name), None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            raise cls(text)
        except TypeError:  # an exception type whose constructor wants other arguments
            pass
    raise ProgramError(f"{name}: {text}")


class Deadline(BaseException):
    """The job's wall clock ran out while the worker was checking."""


class OutputFull(BaseException):
    """The program wrote more than the output cap."""


class _Channel:
    """The worker's side of a job: replies from the program, its output (drained while waiting, capped),
    its exit, and the wall clock."""

    def __init__(self, replies: int, out: int, exited: int | None, deadline: float, cap: int) -> None:
        self.replies, self.out, self.exited, self.deadline, self.cap = replies, out, exited, deadline, cap
        self.output = bytearray()
        self.buffer = bytearray()
        self.gone = False

    def _drain_out(self, until: float | None = None) -> None:
        """Read what the program has written so far (until the monotonic time ``until``, if given)."""
        while (until is None or time.monotonic() < until) and select.select([self.out], [], [], 0)[0]:
            chunk = os.read(self.out, 65536)
            if not chunk:
                return
            self.output += chunk
            if len(self.output) > self.cap:
                raise OutputFull

    def frame(self) -> bytes | None:
        """The next frame from the program; None when it has exited (or closed its end) without one."""
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack(">I", self.buffer[:4])
                if size > 64 * 2**20:
                    raise ProgramGone("the program process broke the protocol")
                if len(self.buffer) >= 4 + size:
                    data = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    return data
            if self.gone:
                return None
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Deadline
            watch = [self.replies, self.out] + ([self.exited] if self.exited is not None else [])
            ready = select.select(watch, [], [], left)[0]
            if self.out in ready:
                self._drain_out()
            if self.replies in ready:
                chunk = os.read(self.replies, 65536)
                if chunk:
                    self.buffer += chunk
                    continue
                self.gone = True
            if self.exited is not None and self.exited in ready:
                while select.select([self.replies], [], [], 0)[0]:  # what it wrote before it went
                    chunk = os.read(self.replies, 65536)
                    if not chunk:
                        break
                    self.buffer += chunk
                self.gone = True

    def finish_output(self, seconds: float = 0.05) -> None:
        """What the program already wrote (orphans holding the pipe open cannot stall this)."""
        self._drain_out(time.monotonic() + seconds)


def _checker(job: dict, state: dict, to_program: int, channel: _Channel) -> bool:
    """Run the task's context and tests here, the candidate's functions there; True when ``check`` returns."""

    def receive() -> tuple:
        data = channel.frame()
        if data is None:
            raise ProgramGone("the program process ended")
        try:
            reply = _plain_loads(data)
        except Exception as exc:  # noqa: BLE001 - whatever the program sent, it is not a plain value
            raise TypeError(str(exc)) from None
        if not isinstance(reply, tuple) or not reply:
            raise ProgramGone("the program process broke the protocol")
        return reply

    ready = receive()
    if ready[0] == "error":
        _raise_remote(ready, state)
    if ready[0] != "ready":
        raise ProgramGone("the program process broke the protocol")

    def proxy(name: str):  # noqa: ANN202
        def call(*args, **kwargs):  # noqa: ANN202
            try:
                _send_frame(to_program, pickle.dumps(("call", name, args, kwargs), protocol=5))
            except BrokenPipeError:
                raise ProgramGone("the program process ended") from None
            reply = receive()
            if reply[0] == "ok" and len(reply) == 2:
                return reply[1]
            if reply[0] == "error" and len(reply) == 4:
                _raise_remote(reply, state)
            raise ProgramGone("the program process broke the protocol")

        call.__name__ = call.__qualname__ = name
        return call

    ns: dict = {"__name__": "__main__"}
    context = job.get("context") or ""
    try:
        exec(compile(context, "<context>", "exec"), ns)  # noqa: S102 - the task's own (trusted) prompt
    except Exception:  # noqa: BLE001 - a prompt that does not run alone: tests see only the proxies
        ns = {"__name__": "__main__"}
    defined = ready[1] if len(ready) > 1 and isinstance(ready[1], list) else []
    for name in defined:
        if isinstance(name, str) and name.isidentifier() and name not in ns:
            ns[name] = proxy(name)
    entry = proxy(job["entry_point"])
    ns[job["entry_point"]] = entry
    exec(compile(job["test"], "<test>", "exec"), ns)  # noqa: S102 - the task's own (trusted) tests
    ns["check"](entry)
    return True


def _on_alarm(signum: int, frame: object) -> None:
    raise Deadline


def _check_in_worker(job: dict, channel: _Channel, to_program: int) -> tuple[bool, dict, str]:
    """The tests, here in the worker (trusted code, a fresh namespace per job, prints captured, the wall clock
    enforced by an alarm); returns (passed, state, the test's own output)."""
    import contextlib

    state: dict = {}
    passed = False
    text = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    # re-armed every 50 ms: a test that swallows the first alarm gets another
    signal.setitimer(signal.ITIMER_REAL, max(0.001, channel.deadline - time.monotonic()), 0.05)
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            try:
                passed = _checker(job, state, to_program, channel)
            except (ProgramGone, Deadline, OutputFull):
                raise
            except MemoryError:
                state["memory"] = True
            except BaseException as exc:  # noqa: BLE001 - the test failed: show the test's own frames
                _program_frames(exc)
    except ProgramGone:
        pass
    except Deadline:
        state["deadline"] = True
    except OutputFull:
        state["output_full"] = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return passed, state, text.getvalue()


def _program_child(
    job: dict, cfg: dict, fds: dict, namespaces: bool, workdir: str, stdlib: list[int]
) -> None:
    """In the job's one process (PID 1 of a fresh mount + PID namespace, or a new session): the mounts,
    descriptors, Landlock, then the program. Never returns."""
    try:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a dying worker takes its job with it
        if namespaces:
            _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
            except OSError:
                pass  # a masked /proc (some containers) forbids a new one; the host's stays visible
            _readonly_root()
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmpfs_mb']}m,mode=700")
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        high_r, high_w = os.dup2(fds["calls_r"], FD_PATHS - 2), os.dup2(fds["replies_w"], FD_PATHS - 1)
        out = os.dup2(fds["out_w"], FD_PATHS - 3)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(high_r, FD_CALLS)
        os.dup2(high_w, FD_REPLIES)
        os.chdir(workdir)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        _landlock(workdir, int(cfg.get("_landlock_abi", 0)))
    except BaseException as exc:  # noqa: BLE001
        os.write(fds["out_w"], f"sandbox setup failed: {exc}\n".encode())
        os._exit(EXIT_SETUP)
    _program_process(job, cfg, workdir, stdlib)


SYS_CLONE = {"x86_64": 56, "aarch64": 220}


def _clone_into_namespaces() -> int | None:
    """``fork()`` straight into a new mount + PID namespace (the child is its PID 1): one process instead of
    fork + unshare + fork. Python's own before/after-fork steps run around the raw syscall (the GIL is held
    through it). None where the architecture's clone number is unknown (the caller forks twice instead)."""
    import platform

    nr = SYS_CLONE.get(platform.machine())
    if nr is None:
        return None
    api, pylib = ctypes.pythonapi, ctypes.PyDLL(None)
    api.PyOS_BeforeFork()
    pid = pylib.syscall(
        ctypes.c_long(nr),
        ctypes.c_ulong(CLONE_NEWNS | CLONE_NEWPID | signal.SIGCHLD),
        None,
        None,
        None,
        ctypes.c_ulong(0),
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(ctypes.get_errno(), "clone(CLONE_NEWNS | CLONE_NEWPID)")
    return int(pid)


def _sweep_children() -> None:
    """Kill and reap every remaining descendant (orphans are re-parented to this subreaper)."""
    for _ in range(50):
        pids: list[int] = []
        try:
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            return
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                time.sleep(0.001)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # an old kernel
        return None


def _wait_exit(pid: int, seconds: float) -> None:
    """Block until child ``pid`` exits or ``seconds`` pass (a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # an old kernel: poll
        end = time.monotonic() + seconds
        while time.monotonic() < end and os.waitpid(pid, os.WNOHANG)[0] == 0:
            time.sleep(0.0005)
        return
    try:
        select.select([fd], [], [], max(0.0, seconds))
    finally:
        os.close(fd)


def _classify(verdict: str | None, passed: bool, state: dict, program: int, cpu: float, cfg: dict) -> str:
    if verdict is not None:  # the worker's own limits: wall clock, output cap
        return verdict
    if passed:
        return "passed"
    cpu_limit = max(1, int(cfg["cpu_s"] + 0.999))
    if state.get("memory") or program == EXIT_MEMORY:
        return "memory"
    if program == -signal.SIGXCPU or (program == -signal.SIGKILL and cpu >= cpu_limit - 0.05):
        return "timeout"
    if program == -signal.SIGXFSZ:
        return "output_limit"
    if program == EXIT_SETUP:
        return "error"
    if state.get("refused"):
        return f"sandbox_refused: {state['refused']}"
    if program in (-signal.SIGKILL, -signal.SIGSYS):
        return "killed_by_program"
    return "failed"


def _program_frames_from(channel: _Channel, state: dict) -> bool:
    """Program mode: the frames it sends until it exits; True when it said it reached its end."""
    done = False
    while True:
        data = channel.frame()
        if data is None:
            return done
        try:
            reply = _plain_loads(data)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(reply, tuple) and reply and reply[0] == "done":
            done = True
        elif isinstance(reply, tuple) and len(reply) == 4 and reply[0] == "error":
            state["refused"] = state.get("refused") or reply[3]
            state["memory"] = state.get("memory") or reply[1] == "MemoryError"


def run_job(job: dict, cfg: dict, namespaces: bool, stdlib: list[int]) -> dict:
    """One process per job (cloned into its own namespaces); the tests run here; classify, sweep."""
    import shutil
    import tempfile

    out_r, out_w = os.pipe()
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    fds = {"out_w": out_w, "calls_r": calls_r, "replies_w": replies_w}
    workdir = "/tmp" if namespaces else tempfile.mkdtemp(prefix="wsbx-")
    start = time.monotonic()
    pid = _clone_into_namespaces() if namespaces else None
    if pid is None:
        if namespaces:  # no raw clone on this architecture: unshare in the child, its child is the program
            pid = os.fork()
            if pid == 0:
                os.unshare(CLONE_NEWNS | CLONE_NEWPID)
                inner = os.fork()
                if inner == 0:
                    _program_child(job, cfg, fds, True, workdir, stdlib)
                _, st = os.waitpid(inner, 0)
                code = os.waitstatus_to_exitcode(st)
                os._exit(128 - code if code < 0 else min(code, 255))
        else:
            pid = os.fork()
    if pid == 0:
        _program_child(job, cfg, fds, namespaces, workdir, stdlib)
    for fd in (out_w, calls_r, replies_w):
        os.close(fd)
    exited = _pidfd(pid)
    channel = _Channel(
        replies_r, out_r, exited, start + float(cfg["timeout_s"]), int(cfg["max_output_bytes"])
    )
    verdict, state, passed, test_output = None, {}, False, ""
    try:
        if job["mode"] == "check":
            passed, state, test_output = _check_in_worker(job, channel, calls_w)
            verdict = (
                "timeout" if state.get("deadline") else "output_limit" if state.get("output_full") else None
            )
        else:
            passed = _program_frames_from(channel, state)
        if verdict is None:
            channel.finish_output()
    except Deadline:
        verdict = "timeout"
    except OutputFull:
        verdict = "output_limit"
    os.close(calls_w)  # a checked program sees the end of its calls and exits
    if job["mode"] == "check" and verdict is None:
        _wait_exit(pid, 0.05)
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if not done:  # still running (a timeout, or threads of its own after the check): it has nothing to add
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        _, status, usage = os.wait4(pid, 0)
    if exited is not None:
        os.close(exited)
    _sweep_children()
    seconds = time.monotonic() - start
    for fd in (out_r, replies_r):
        os.close(fd)
    if not namespaces:
        shutil.rmtree(workdir, ignore_errors=True)
    program = os.waitstatus_to_exitcode(status)
    if job["mode"] == "program":
        passed = passed and program == 0
    if verdict is not None:
        passed = False
    cap = int(cfg["max_output_bytes"])
    text = (bytes(channel.output[:cap]).decode("utf-8", "replace") + test_output)[: cap + 4096]
    label = _classify(verdict, passed, state, program, usage.ru_utime + usage.ru_stime, cfg)
    return {
        "id": job.get("id"),
        "status": label,
        "passed": label == "passed",
        "exit_code": program,
        "output": text,
        "seconds": seconds,
    }


def _read_message(stream) -> dict | None:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = stream.read(n - len(buf))
            if not chunk:
                return buf
            buf += chunk
        return buf

    head = exact(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(exact(size))


def _send(stream, message: dict) -> None:
    data = json.dumps(message).encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def main() -> None:
    proto_in, proto_out = os.dup(0), os.dup(1)
    for fd, target in ((proto_in, 100), (proto_out, 101)):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    stdin, stdout = open(100, "rb", buffering=0), open(101, "wb")  # noqa: SIM115
    sys.stdout = sys.stderr = io.StringIO()  # nothing may print into the protocol
    cfg = _read_message(stdin)
    if cfg is None:
        return
    try:
        info = setup_worker(cfg)
    except OSError as exc:
        _send(stdout, {"ready": False, "error": str(exc)})
        return
    _send(stdout, {"ready": True} | info)
    namespaces = info["isolation"] == "namespaces"
    cfg["_landlock_abi"] = info["landlock_abi"] if cfg.get("landlock", True) else 0
    stdlib = info.pop("stdlib_fds")
    import gc

    gc.freeze()  # what is imported now is never traversed again: fewer copy-on-write faults in every fork
    while True:
        job = _read_message(stdin)
        if job is None:
            return
        job.setdefault("mode", "program")
        _send(stdout, run_job(job, cfg, namespaces, stdlib))


if __name__ == "__main__":
    main()
