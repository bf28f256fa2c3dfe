"""What runs inside a pod's namespaces: the pod sandbox ("pause"), a container's start, and an exec.

A script of its own (``python -I -S container_init.py MODE ...``, standard library only), run as root
by the pod runner. It plays the container runtime (containerd and runc) on one machine:

- ``pause HOSTNAME READY_FILE``: the pod sandbox. New network and UTS namespaces, loopback up, the pod's host
  name, and an IPC namespace; then it waits. Every container of the pod joins these namespaces, so
  containers of one pod share ``localhost`` and System V shared memory, and pods never do
  (https://kubernetes.io/docs/concepts/workloads/pods/#pod-networking).
- ``run SPEC.json``: one container. It joins the sandbox's network and UTS namespaces, makes a mount
  and a PID namespace of its own, and forks the container's process as PID 1 of that namespace (so a
  SIGTERM to a process that installed no handler is ignored, as in any container, and everything the
  container started dies with it). That process gets a root file system of its own: an overlay whose
  lower layer is the machine's ``/`` (the "image") and whose upper layer is a tmpfs (the container's
  writable layer, gone when it exits), with ``/proc``, a minimal ``/dev``, an empty ``/tmp`` and ``/run``,
  the pod's ``/etc/hosts``, then the volumes at their mount paths (resolved inside the new root, never
  through a symlink out of it), read-only where the pod says so, and the root read-only when
  ``readOnlyRootFilesystem`` is set. Then chroot, working directory, user, groups, no_new_privs, exec.
  Nothing is written to the machine's own files: every mount lives in the container's namespace.
  The parent stays outside as the runtime's shim: it forwards signals to PID 1 and exits with its
  status (128 + signal number when a signal ended it, as container runtimes report it).
- ``exec SPEC_JSON``: ``kubectl exec`` and exec probes: join a running container's namespaces and root,
  become its user, run a command with the container's environment.

A failure before the container's command starts exits 128 and writes the reason to the container's
termination-message file, which the kubelet reports as ``StartError``.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
START_ERROR = 128
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encoded = [None if value is None else value.encode() for value in (source, target, fstype)]
    _check(
        _libc.mount(encoded[0], encoded[1], encoded[2], flags, None if data is None else data.encode()),
        f"mount {target}",
    )


def _die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def _enter(pid: int, *kinds: str) -> None:
    """Join namespaces of process ``pid`` (opened first: /proc changes meaning once inside)."""
    flags = {"net": CLONE_NEWNET, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS}
    handles = [(kind, os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)) for kind in kinds]
    for kind, handle in handles:
        _check(_libc.setns(handle, flags[kind]), f"setns({kind})")
        os.close(handle)


def inside(root: str, path: str) -> str:
    """``path`` of the container, as a path of this process under ``root``: symlinks are followed as
    the container would see them (an absolute link restarts at ``root``), so a mount never escapes it."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = os.path.join(root, *current, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        current.append(part)
    return os.path.join(root, *current)


def _make(root: str, path: str, *, is_file: bool) -> str:
    target = inside(root, path)
    if is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "a", encoding="utf-8"):
                pass
    else:
        os.makedirs(target, exist_ok=True)
    return target


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def pause(hostname: str, ready: str) -> None:
    _die_with_parent()
    _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC), "unshare(net, uts, ipc)")
    socket.sethostname(hostname)
    _loopback_up()
    with open(ready, "w", encoding="utf-8") as handle:
        handle.write("ready")
    while True:
        signal.pause()


def _root_file_system(spec: dict[str, Any]) -> str:
    """The container's root: overlay over the machine's ``/``, then the kernel file systems and volumes."""
    root, layer = str(spec["root"]), str(spec["layer"])
    _mount("tmpfs", layer, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.makedirs(f"{layer}/upper")
    os.makedirs(f"{layer}/work")
    _mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={layer}/upper,workdir={layer}/work")
    _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID, "mode=755")
    for device in DEVICES:
        _make(root, f"/dev/{device}", is_file=True)
        _mount(f"/dev/{device}", f"{root}/dev/{device}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, f"{root}/dev/{name}")
    os.symlink("/proc/self/fd/2", f"{root}/dev/stderr")
    for name in ("shm", "pts"):
        os.makedirs(f"{root}/dev/{name}")
    _mount("shm", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _mount("/sys", f"{root}/sys", None, MS_BIND | MS_REC)
    _mount(None, f"{root}/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for path, mode in spec["hide"]:
        _mount("tmpfs", _make(root, path, is_file=False), "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode}")
    for table, lines in (("passwd", spec["users"]), ("group", spec["groups"])):
        if lines:
            with open(inside(root, f"/etc/{table}"), "a", encoding="utf-8") as handle:
                handle.write("".join(f"{line}\n" for line in lines))
    for directory in spec["traverse"]:
        path = inside(root, directory)
        os.chmod(path, os.stat(path).st_mode | 0o111)
    _make(root, spec["workdir"], is_file=False)
    for source, target, read_only, is_file in spec["binds"]:
        where = _make(root, target, is_file=is_file)
        _mount(source, where, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, where, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    if spec["readonly_root"]:
        _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        for path, _ in spec["hide"]:
            _mount(None, inside(root, path), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    return root


def _become(spec: dict[str, Any]) -> None:
    os.setgroups(spec["supplemental_groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    _die_with_parent()  # a change of user clears the parent-death signal: set it again
    os.umask(0o022)
    if spec["no_new_privs"]:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _exec(spec: dict[str, Any]) -> None:
    argv, env = spec["argv"], spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise OSError(f'exec: "{argv[0]}": {exc.strerror}') from None


def _fail(spec: dict[str, Any], exc: BaseException) -> None:
    message = f"container init failed: {exc}"
    print(message, file=sys.stderr, flush=True)
    try:
        with open(spec["termination_log"], "w", encoding="utf-8") as handle:
            handle.write(message)
    except (OSError, KeyError):
        pass
    os._exit(START_ERROR)


def _shim(child: int) -> None:
    """Forward signals to the container's PID 1 and leave with its status."""
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: os.kill(child, number))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(START_ERROR)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def run(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        _die_with_parent()
        _enter(spec["pause_pid"], "net", "uts", "ipc")
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(mnt, pid)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        _fail(spec, exc)
    child = os.fork()
    if child:
        with open(spec["pid_file"], "w", encoding="utf-8") as handle:
            handle.write(str(child))
        _shim(child)
    try:
        _die_with_parent()
        root = _root_file_system(spec)
        os.chroot(root)
        os.chdir(spec["workdir"])
        _become(spec)
        _exec(spec)
    except BaseException as exc:
        _fail(spec, exc)


def exec_in(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        _die_with_parent()
        _enter(spec["pid"], "net", "uts", "ipc", "pid", "mnt")
        os.chroot(spec["root"])
        os.chdir(spec["workdir"])
    except OSError as exc:
        print(f"exec failed: {exc}", file=sys.stderr, flush=True)
        os._exit(START_ERROR)
    child = os.fork()
    if child:
        _shim(child)
    try:
        _die_with_parent()
        _become(spec)
        _exec(spec)
    except BaseException as exc:
        print(f"exec failed: {exc}", file=sys.stderr, flush=True)
        os._exit(126 if isinstance(exc, PermissionError) else 127)


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "pause" and len(argv) == 4:
        pause(argv[2], argv[3])
    elif mode == "run" and len(argv) == 3:
        run(argv[2])
    elif mode == "exec" and len(argv) == 3:
        exec_in(argv[2])
    else:
        print("usage: container_init.py pause HOSTNAME READY_FILE | run SPEC.json | exec SPEC_JSON", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
