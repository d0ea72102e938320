"""The sandbox's worker process (stdlib only; run as ``python -I -S _sandbox_worker.py``).

Seed context: the execution harnesses of HumanEval ("Evaluating Large Language Models Trained on Code",
arXiv 2107.03374) and EvalPlus (arXiv 2305.01210) run the candidate *and its tests* in one forked process
behind an in-process "reliability guard", so whatever the tests decide, the candidate can overwrite. Here
the isolation is the operating system's, and the verdict is computed where the candidate cannot reach.

Per worker (once): root is dropped to ``nobody``; descriptors to the standard-library folders are opened
first and ``sys.path`` points through them (``/proc/self/fd/N``), so *every* stdlib module, codec and
extension imports after the drop; a user + network namespace is entered (no network at all); the worker
becomes non-dumpable (nothing it forks can ptrace or read it) and a child subreaper (no descendant can
escape the post-job sweep by ``setsid`` or double forks).

Per job: a child enters a new mount + PID namespace with a read-only filesystem, a size-capped tmpfs on
``/tmp`` and a fresh ``/proc``; its PID 1 is the **supervisor**, which restricts itself with Landlock
(writes only in the work dir, no TCP, signals only inside the job) where the kernel has it, and forks the
**program process**. The program process gets rlimits, no capabilities, ``no_new_privs`` and a seccomp
filter (no ptrace / process_vm_*, no AF_INET*/netlink/packet sockets, no mount/unshare/io_uring/bpf).

* ``mode = "check"``: the program process runs the candidate's code and then only answers calls; the
  supervisor — a separate, non-dumpable process the candidate never shares memory with — runs the task's
  trusted context (its prompt) and tests, with the entry point (and any other function the program
  defines) bound to proxies that call into the program process. Arguments and results cross as pickles
  the supervisor decodes with a loader that builds only plain values (numbers, strings, bytes, lists,
  tuples, dicts, sets, a few stdlib value types), so a result's own ``__eq__`` never runs where the
  verdict is made. The supervisor reports the verdict on a pipe only it holds.
* ``mode = "program"``: the program process runs a whole program; "passed" means it returned normally and
  said so — a claim the program itself can fake (there is no separate checker for an opaque program).

Where namespaces are unavailable (``isolation = rlimits``) the same processes, rlimits, Landlock, seccomp
and the subreaper sweep remain; the host's ``/proc`` stays visible. Protocol on stdin/stdout: 4-byte
big-endian length + JSON, one job in, one result out.
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


# --- Landlock (supervisor and program) and seccomp (program) ---------------------------------------------
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
SYS_SOCKET_X86_64, AF_UNIX = 41, 1


def _seccomp_supported() -> bool:
    import platform

    return platform.machine() == "x86_64"


def _seccomp() -> None:
    """A deny-list seccomp filter: EPERM for the syscalls above, EACCES for non-AF_UNIX sockets."""
    if not _seccomp_supported():
        return
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    deny, deny_net = 0x00050000 | errno.EPERM, 0x00050000 | errno.EACCES
    n = len(DENIED_X86_64)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH_X86_64), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    # after the nr load (index 3): [4: x32?][5..4+n: denied?][5+n: socket?][allow][ld arg0][unix?][allow]
    # [5+n+5: deny_net][5+n+6: deny]; a jump from index i lands on i + 1 + offset
    prog.append((jge, n + 6, 0, 0x40000000))  # x32 ABI -> deny
    for i, nr in enumerate(DENIED_X86_64):
        prog.append((jeq, n + 5 - i, 0, nr))  # -> deny
    prog.append((jeq, 1, 0, SYS_SOCKET_X86_64))
    prog.append((ret, 0, 0, allow))
    prog.append((ld, 0, 0, 16))  # args[0] (domain), low 32 bits
    prog.append((jeq, 0, 1, AF_UNIX))
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, deny_net))
    prog.append((ret, 0, 0, deny))
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


# --- framing of the supervisor <-> program channel --------------------------------------------------------
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


def _frames_until_exit(fd: int, pid: int) -> list[bytes]:
    """The frames written on ``fd`` until process ``pid`` exits (its orphans may hold ``fd`` open longer)."""
    exited = _pidfd(pid)
    watch = [fd] + ([exited] if exited is not None else [])
    buf = bytearray()
    while watch:
        ready = select.select(watch, [], [])[0]
        if exited in ready:
            watch.remove(exited)
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    if exited is not None:
        os.close(exited)
    frames, view = [], bytes(buf)
    while len(view) >= 4:
        (size,) = struct.unpack(">I", view[:4])
        if len(view) < 4 + size:
            break
        frames.append(view[4 : 4 + size])
        view = view[4 + size :]
    return frames


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
    """Answer the supervisor's calls until it hangs up."""
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


# --- the supervisor ---------------------------------------------------------------------------------------
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


def _checker(job: dict, state: dict, to_program: int, from_program: int) -> bool:
    """Run the task's context and tests here, the candidate's functions there; True when ``check`` returns."""

    def receive() -> tuple:
        data = _recv_frame(from_program)
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
            _send_frame(to_program, pickle.dumps(("call", name, args, kwargs), protocol=5))
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


def _supervise(job: dict, cfg: dict, out_w: int, report_w: int, workdir: str, stdlib: list[int]) -> None:
    """The job's PID 1 (or session leader): Landlock, fork the program, check or wait, report. Never returns."""
    try:
        LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(null)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        _landlock(workdir, int(cfg.get("_landlock_abi", 0)))
        calls_r, calls_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_w)
            high_r, high_w = os.dup2(calls_r, FD_PATHS - 2), os.dup2(replies_w, FD_PATHS - 1)
            os.dup2(high_r, FD_CALLS)
            os.dup2(high_w, FD_REPLIES)
            _program_process(job, cfg, workdir, stdlib)
        for fd in (calls_r, replies_w):
            os.close(fd)
        _limit(
            cfg | {"max_processes": max(2, int(cfg["max_processes"]))}, cpu_limit=False
        )  # tests: wall clock
        state: dict = {}
        passed, detail = False, ""
        if job["mode"] == "check":
            try:
                passed = _checker(job, state, calls_w, replies_r)
            except ProgramGone as exc:
                detail = str(exc)
            except MemoryError:
                state["memory"] = True
            except BaseException as exc:  # noqa: BLE001 - the test failed: show the test's own frames
                _program_frames(exc)
                detail = f"{type(exc).__name__}"
            sys.stdout.flush()
            os.close(calls_w)  # the program process sees the end of its calls and exits
        else:
            os.close(calls_w)
            for data in _frames_until_exit(replies_r, pid):
                try:
                    reply = _plain_loads(data)
                except Exception:  # noqa: BLE001
                    continue
                if isinstance(reply, tuple) and reply and reply[0] == "done":
                    passed = True
                elif isinstance(reply, tuple) and len(reply) == 4 and reply[0] == "error":
                    state["refused"] = state.get("refused") or reply[3]
                    state["memory"] = state.get("memory") or reply[1] == "MemoryError"
        if job["mode"] == "check":  # give it a moment to exit on its own, then it has nothing to add
            _wait_exit(pid, 0.2)
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
        program_exit = os.waitstatus_to_exitcode(status)
        if job["mode"] == "program":
            passed = passed and program_exit == 0
        report = {
            "passed": passed,
            "program_exit": program_exit,
            "cpu": usage.ru_utime + usage.ru_stime,
            "refused": state.get("refused"),
            "memory": bool(state.get("memory")),
            "detail": detail,
        }
        os.write(report_w, json.dumps(report).encode())
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        os.write(out_w, f"sandbox setup failed: {exc}\n".encode())
        os._exit(EXIT_SETUP)


def _namespace_child(job: dict, cfg: dict, out_w: int, report_w: int, sync_r: int, stdlib: list[int]) -> None:
    """Where the raw clone is unavailable: unshare a mount + PID namespace, fork its PID 1 and relay its exit."""
    try:
        os.setsid()
        os.unshare(CLONE_NEWNS | CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:  # PID 1 of the new namespace
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _namespace_init(job, cfg, out_w, report_w, sync_r, stdlib)
        os.close(out_w)
        os.close(report_w)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else min(code, 255))
    except BaseException as exc:  # noqa: BLE001
        os.write(out_w, f"sandbox setup failed: {exc}\n".encode())
        os._exit(EXIT_SETUP)


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


def _namespace_init(job: dict, cfg: dict, out_w: int, report_w: int, sync_r: int, stdlib: list[int]) -> None:
    """PID 1 of a fresh mount + PID namespace: read-only root, tmpfs /tmp, fresh /proc; then supervise."""
    try:
        os.setsid()
        if select.select([sync_r], [], [], 0)[0]:  # the worker is already gone: stop
            os._exit(137)
        _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
        except OSError:
            pass  # a masked /proc (some containers) forbids a new one; the host's stays visible
        _readonly_root()
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmpfs_mb']}m,mode=700")
    except BaseException as exc:  # noqa: BLE001
        os.write(out_w, f"sandbox setup failed: {exc}\n".encode())
        os._exit(EXIT_SETUP)
    _supervise(job, cfg, out_w, report_w, "/tmp", stdlib)


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


def _classify(report: dict | None, cfg: dict, verdict: str | None, code: int, text: str) -> tuple[str, bool]:
    if verdict is not None:  # the worker's own limits: wall clock, output cap
        return verdict, False
    if report is None:  # the supervisor never reported: it was killed from inside the job, or failed to start
        if code == EXIT_SETUP and "sandbox setup failed" in text:
            return "error", False
        if code == 128 + signal.SIGXCPU:
            return "timeout", False
        return "killed_by_program", False
    if report["passed"]:
        return "passed", True
    program = int(report["program_exit"])
    cpu_limit = max(1, int(cfg["cpu_s"] + 0.999))
    if report.get("memory") or program == EXIT_MEMORY:
        return "memory", False
    if program == -signal.SIGXCPU or (program == -signal.SIGKILL and report["cpu"] >= cpu_limit - 0.05):
        return "timeout", False
    if program == -signal.SIGXFSZ:
        return "output_limit", False
    if report.get("refused"):
        return f"sandbox_refused: {report['refused']}", False
    if program == -signal.SIGKILL:
        return "killed_by_program", False
    return "failed", False


def run_job(job: dict, cfg: dict, namespaces: bool, stdlib: list[int]) -> dict:
    """Fork, run, read the output up to its cap, enforce the wall clock, sweep the rest, classify."""
    import shutil
    import tempfile

    out_r, out_w = os.pipe()
    report_r, report_w = os.pipe()
    sync_r, sync_w = os.pipe()
    workdir = None if namespaces else tempfile.mkdtemp(prefix="wsbx-")
    start = time.monotonic()
    cloned = namespaces and cfg.get("_clone", True)
    pid = _clone_into_namespaces() if cloned else None
    if pid is None:
        cloned, pid = False, os.fork()
    if pid == 0:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a dying worker takes its job with it
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)  # let go of the worker's protocol pipes at once
        os.dup2(null, 1)
        os.close(null)
        for fd in (out_r, report_r, sync_w):
            os.close(fd)
        if cloned:
            _namespace_init(job, cfg, out_w, report_w, sync_r, stdlib)
        if namespaces:
            _namespace_child(job, cfg, out_w, report_w, sync_r, stdlib)
        os.setsid()
        _supervise(job, cfg, out_w, report_w, workdir or "/tmp", stdlib)
    for fd in (out_w, report_w, sync_r):
        os.close(fd)
    deadline = start + float(cfg["timeout_s"])
    cap = int(cfg["max_output_bytes"])
    out, report_bytes, status, verdict = bytearray(), b"", None, None
    exited = _pidfd(pid)  # the supervisor's end, not the output's EOF, ends the job: an orphan that keeps the
    open_fds = [out_r, report_r] + ([exited] if exited is not None else [])  # output open cannot stall it
    finishing = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0 and not finishing:
            verdict = "timeout"
            break
        ready, _, _ = select.select(open_fds, [], [], 0 if finishing else left)
        if exited in ready:  # take what is already written, then stop listening
            finishing = True
            open_fds = [fd for fd in open_fds if fd != exited]
            ready = select.select(open_fds, [], [], 0)[0]
        if finishing and not ready:
            break
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
            elif fd == out_r:
                out += chunk
                if len(out) > cap:
                    verdict = "output_limit"
            else:
                report_bytes += chunk
        if verdict:
            break
    if exited is not None:
        os.close(exited)
    if verdict is None:
        _wait_exit(pid, deadline - time.monotonic())
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        else:
            verdict = "timeout"
    if status is None:  # kill the whole tree: the process group, then the child (PID 1 takes its namespace)
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        _, status = os.waitpid(pid, 0)
    if not namespaces:
        try:
            os.killpg(pid, signal.SIGKILL)  # leftovers of a program that returned but left children behind
        except OSError:
            pass
    _sweep_children()
    seconds = time.monotonic() - start
    os.close(sync_w)
    for fd in (out_r, report_r):
        os.close(fd)
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    text = bytes(out[:cap]).decode("utf-8", "replace")
    try:
        report = json.loads(report_bytes) if report_bytes else None
    except ValueError:
        report = None
    status_label, passed = _classify(report, cfg, verdict, code, text)
    exit_code = int(report["program_exit"]) if report else code
    return {
        "id": job.get("id"),
        "status": status_label,
        "passed": passed,
        "exit_code": exit_code,
        "output": text,
        "seconds": seconds,
    }


def _read_message(stream) -> dict | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(stream.read(size))


def _send(stream, message: dict) -> None:
    data = json.dumps(message).encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
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
