"""The sandbox's worker process (stdlib only; run as ``python -I -S _sandbox_worker.py``).

Seed context: the execution harnesses of HumanEval ("Evaluating Large Language Models Trained on Code",
arXiv 2107.03374) and EvalPlus (arXiv 2305.01210) run each program in a forked process with an in-process
"reliability guard"; this worker moves the isolation to the operating system. It is started by
:mod:`warmstart_code.sandbox` with an empty environment and no inherited descriptors, imports a fixed set of
standard-library modules, drops root to ``nobody`` when it is root, and enters a new user and network
namespace once (so nothing it forks can reach a network). For every job it forks a child that enters a new
mount and PID namespace, makes the whole filesystem read-only, mounts a size-capped tmpfs on ``/tmp`` as the
only writable place, mounts a fresh ``/proc`` (the host's processes are invisible), and forks the program's
process as PID 1 of that namespace — when it ends or is killed, the kernel kills everything it spawned.
The program's process gets rlimits (CPU, address space, file size, processes, descriptors, no core), a new
session, stdin from /dev/null, stdout+stderr into one pipe the worker reads up to a cap, and fd 3 for the
pass token. Where namespaces are unavailable (``isolation = rlimits``) the same rlimits, a private temp
dir, a new session killed as a group and, as an extra layer, a Python audit-hook guard are what remain.

Protocol on stdin/stdout: 4-byte big-endian length + JSON, one job in, one result out.
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

# Standard-library modules a program may import: imported now because, after dropping to `nobody`, the
# interpreter's own directory may be unreadable (e.g. a Python under /root). Escape tools are included on
# purpose (subprocess, socket, ctypes, shutil): the OS layer, not their absence, must contain them.
PREIMPORT = [
    "abc",
    "array",
    "ast",
    "base64",
    "glob",
    "fnmatch",
    "pathlib",
    "shlex",
    "posixpath",
    "binascii",
    "bisect",
    "builtins",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "csv",
    "ctypes",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "errno",
    "fractions",
    "functools",
    "gc",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "keyword",
    "locale",
    "math",
    "numbers",
    "operator",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "resource",
    "shutil",
    "signal",
    "socket",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sys",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "urllib",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "zlib",
]
for _name in PREIMPORT:
    try:
        __import__(_name)
    except ImportError:  # pragma: no cover - a minimal Python build
        pass
import resource

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 1 << 14, 1 << 18, 2, 4
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 0x1, 0x8000, -100, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
NOBODY = 65534
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


def setup_worker(cfg: dict) -> dict:
    """Drop root, enter a user + network namespace; returns what was achieved."""
    info = {"isolation": "rlimits", "uid": os.geteuid(), "dropped": False, "network": "host"}
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
            os.unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
            info["isolation"], info["network"] = "namespaces", "none (empty network namespace)"
        except OSError as exc:
            if cfg.get("isolation") == "namespaces":
                raise
            info["namespace_error"] = str(exc)
    info["uid"] = uid
    return info


def _guard(workdir: str) -> None:
    """The extra, escapable layer: an audit hook refusing process, network and outside-write events."""
    blocked = {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
        "subprocess.Popen", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.putenv", "os.unsetenv",
    }  # fmt: skip
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


def _limit(cfg: dict) -> None:
    mem = int(cfg["memory_mb"]) * 2**20
    fsize = int(cfg["file_size_mb"]) * 2**20
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    limits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"])),
        (resource.RLIMIT_NOFILE, (64, 64)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    for which, value in limits:
        resource.setrlimit(which, value)


def _program_process(job: dict, cfg: dict, out_w: int, token_w: int, workdir: str) -> None:
    """Runs in the program's process: descriptors, limits, then the program. Never returns."""
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(token_w, 3)
        os.closerange(4, 1 << 16)  # no inherited descriptors (the worker's protocol pipes included)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        _limit(cfg)
        if cfg.get("guard", True):
            _guard(workdir)
        token = job.pop("token").encode()
        source = job.pop("program")
        code = compile(source, "<program>", "exec")
        del source
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102 - the point
        sys.stdout.flush()
        os.write(3, token)
        os._exit(0)
    except MemoryError:
        os.write(2, b"MemoryError\n")
        os._exit(137)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        os._exit(code if code else 0)
    except BaseException as exc:  # noqa: BLE001 - report the program's own failure
        import traceback

        try:  # the program's frames only, not the harness's
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, tb, limit=-3)
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(1)


def _namespace_child(job: dict, cfg: dict, out_w: int, token_w: int, sync_r: int) -> None:
    """Child of the worker: new mount + PID namespace, read-only root, tmpfs /tmp; forks PID 1."""
    try:
        os.setsid()
        os.unshare(CLONE_NEWNS | CLONE_NEWPID)
        _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        pid = os.fork()
        if pid == 0:  # PID 1 of the new namespace
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if select.select([sync_r], [], [], 0)[0]:  # the parent is already gone: stop
                os._exit(137)
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
            except OSError:
                pass  # a masked /proc (some containers) forbids a new one; the host's stays visible
            _readonly_root()
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmpfs_mb']}m,mode=700")
            _program_process(job, cfg, out_w, token_w, "/tmp")
        os.close(out_w)
        os.close(token_w)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else min(code, 255))
    except BaseException as exc:  # noqa: BLE001
        os.write(out_w, f"sandbox setup failed: {exc}\n".encode())
        os._exit(120)


def run_job(job: dict, cfg: dict, namespaces: bool) -> dict:
    """Fork, run, read the output up to its cap, enforce the wall clock, kill the rest, classify."""
    import shutil
    import tempfile

    out_r, out_w = os.pipe()
    token_r, token_w = os.pipe()
    sync_r, sync_w = os.pipe()
    workdir = None if namespaces else tempfile.mkdtemp(prefix="wsbx-")
    token = job["token"].encode()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a dying worker takes its job with it
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)  # let go of the worker's protocol pipes at once
        os.dup2(null, 1)
        os.close(out_r)
        os.close(token_r)
        os.close(sync_w)
        if namespaces:
            _namespace_child(job, cfg, out_w, token_w, sync_r)
        os.setsid()
        _program_process(job, cfg, out_w, token_w, workdir)
    os.close(out_w)
    os.close(token_w)
    os.close(sync_r)
    deadline = start + float(cfg["timeout_s"])
    cap = int(cfg["max_output_bytes"])
    out, got_token, status, verdict = bytearray(), b"", None, None
    open_fds = [out_r, token_r]
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            verdict = "timeout"
            break
        ready, _, _ = select.select(open_fds, [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
            elif fd == out_r:
                out += chunk
                if len(out) > cap:
                    verdict = "output_limit"
            else:
                got_token += chunk
        if verdict:
            break
    if verdict is None:
        left = max(0.0, deadline - time.monotonic())
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            if time.monotonic() - start > float(cfg["timeout_s"]):
                verdict = "timeout"
                break
            time.sleep(min(0.002, left))
    if status is None:  # kill the whole tree: the process group, then the child (PID 1 takes its namespace)
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        _, status = os.waitpid(pid, 0)
    elif not namespaces:
        try:
            os.killpg(pid, signal.SIGKILL)  # leftovers of a program that returned but left children behind
        except OSError:
            pass
    seconds = time.monotonic() - start
    os.close(sync_w)
    for fd in (out_r, token_r):
        os.close(fd)
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    text = bytes(out[:cap]).decode("utf-8", "replace")
    passed = verdict is None and code == 0 and got_token == token
    if verdict is None:
        if passed:
            verdict = "passed"
        elif code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL) and "MemoryError" not in text:
            verdict = "timeout"
        elif "MemoryError" in text or code == 137:
            verdict = "memory"
        elif code == 128 + signal.SIGXFSZ:
            verdict = "output_limit"
        elif code == 120:
            verdict = "error"
        else:
            verdict = "failed"
    return {"id": job.get("id"), "status": verdict, "passed": passed, "exit_code": code,
            "output": text, "seconds": seconds}  # fmt: skip


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
    while True:
        job = _read_message(stdin)
        if job is None:
            return
        _send(stdout, run_job(job, cfg, namespaces))


if __name__ == "__main__":
    main()
