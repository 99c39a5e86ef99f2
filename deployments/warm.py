"""Warm flow-run processes for `braid up`'s process work pools.

A process work pool starts every flow run as ``python -m prefect.engine``: a new Python
that imports Prefect, the pipeline, Great Expectations and torch (about 7 CPU s on two
cores) before the run's first step. ``braid up`` starts one warm process, the *zygote*,
that has imported them once, and gives its pools this module as their command. Each
flow run then starts as a small launcher (``python -m deployments.warm``, standard
library only) that hands its standard streams, environment, working directory and
arguments to the zygote over a Unix socket; the zygote forks a child that runs
``prefect.engine`` exactly as ``python -m prefect.engine`` would, with the launcher's
environment and streams. The launcher stands in for the child towards the worker: it
forwards the signals the worker sends (SIGTERM, SIGINT) and exits with the child's
status, or dies of the same signal; if the launcher is killed, its child dies with it.

The warm path is taken only when it gives the same run as a cold start. The launcher
becomes ``python -m prefect.engine`` itself (``exec``, as if this module were not there)
when no zygote is named or answers, and when the run's environment differs from the
zygote's in a variable that a library reads when it is imported (``IMPORT_TIME``:
Python's, torch's, Hugging Face's, numba's, polars', Braid's own): a pool whose job
variables change those, or a worker started elsewhere, runs cold and correct. Prefect's
settings the child reads again from the run's environment, as Prefect itself does when
its plugins change the environment.

The socket lives in a directory only its owner can enter; the zygote serves only its own
user's launchers, and a launcher talks only to its own user's zygote (``SO_PEERCRED``).
A run never starts on code older than what a cold start would import: when any imported
module's file has changed (an edit, an upgrade), runs start cold and the zygote imports
again as soon as its running children are done.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOCKET_ENV = "BRAID_WARM_SOCKET"
ENGINE = "prefect.engine"
# What a flow run of the pipeline imports, eagerly or on first use. Imports only: a
# fork inherits loaded modules safely, but not threads, event loops or open clients,
# so nothing here may start one (torch's thread pools start on its first operation).
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "flows.pipeline",
    "great_expectations",
    "data_quality.expectations",
    "torch",
    "transformers",
    "tasks.media.image",
    "tasks.media.text",
    "tasks.media.audio",
    "tasks.media.encoders",
)
_MESSAGE = 1 << 20  # SOCK_SEQPACKET keeps each message whole; an environment is a few KB


# What libraries read from the environment when they are imported (the zygote imported
# them under its own), rather than when they run: a run whose values differ starts cold.
IMPORT_TIME = ("PYTHON", "LD_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH", "PYTORCH_",
               "CUDA", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "NUMBA_", "POLARS_", "GX_",
               "BRAID_", "_RJEM_MALLOC_CONF")  # fmt: skip


def differences(
    base: dict[str, str], env: dict[str, str], added: dict[str, str] | None = None
) -> list[str]:
    """The variables read at import time whose values differ between two environments.

    ``added`` holds what importing set in the environment (polars writes its allocator
    defaults into ``_RJEM_MALLOC_CONF``, before its own options): a run whose worker
    imported polars carries them, one whose worker did not does not, and both give the
    same allocator. Prefect's own settings are not compared: the child reads them again
    from the run's environment (as Prefect does after its plugins set variables)."""

    def normal(name: str, value: str | None) -> object:
        if name in (added or {}):
            return frozenset((value or "").split(",")) - {""} - set(added[name].split(","))  # type: ignore[index]
        return value

    names = {n for n in set(base) | set(env) if n.startswith(IMPORT_TIME)}
    return sorted(n for n in names if normal(n, base.get(n)) != normal(n, env.get(n)))


def socket_path(home: Path) -> Path:
    """Where a stack with this home keeps its zygote's socket: in a directory of its own
    that only its owner can enter (a Unix socket's path has at most 107 bytes)."""
    path = home / "warm" / "zygote.sock"
    if len(os.fsencode(path)) > 100:
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"braid-warm-{os.getuid()}-{digest}" / "zygote.sock"
    return path


# The launcher ------------------------------------------------------------------------


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _exec_engine() -> None:
    """Become ``python -m prefect.engine`` with this process's arguments (never returns)."""
    # A signal held back while asking the zygote is delivered now (as to a cold start).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", ENGINE, *sys.argv[1:]])


def _peer_uid(conn: socket.socket) -> int:
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", credentials)[1])


def _private(path: str) -> bool:
    """Whether the socket's directory is this user's and closed to everyone else: the
    launcher hands the zygote its environment (credentials, tokens) and its streams."""
    try:
        folder = os.stat(os.path.dirname(path))
    except OSError:
        return False
    return folder.st_uid == os.getuid() and not folder.st_mode & 0o077


def launch() -> None:
    """Run this flow run in a child of the zygote, or start cold when it can't."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not _private(path):
        _exec_engine()
    # Held back until the child is known, then forwarded: the child runs (and may print)
    # before the zygote's reply arrives, and a worker's SIGTERM must reach it.
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The exchange takes milliseconds; a zygote that does not answer in a minute is stuck,
    # and a child it forks after the launcher gave up dies at once (its launcher is gone).
    conn.settimeout(60)
    try:
        conn.connect(path)  # type: ignore[arg-type]
        if _peer_uid(conn) != os.getuid():
            raise PermissionError("the socket is served by another user")
        request = {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]}
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
        reply = json.loads(conn.recv(_MESSAGE) or b'{"fallback": "the zygote closed"}')
    except (OSError, ValueError):
        reply = {"fallback": "no zygote answered"}
    conn.settimeout(None)  # the child's status comes when the run ends, however long
    if "pid" not in reply:
        conn.close()
        _exec_engine()
    child = int(reply["pid"])

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    message = conn.recv(_MESSAGE)  # the child's wait status, once it has exited
    if not message:  # the zygote died first; the child, if it lives, is init's now
        sys.exit(1)
    code = os.waitstatus_to_exitcode(int(json.loads(message)["status"]))
    if code < 0:  # killed by a signal: die of the same one, as the child did
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# The zygote --------------------------------------------------------------------------


@dataclass
class _Request:
    conn: socket.socket
    fds: list[int]  # the launcher's stdin, stdout, stderr
    env: dict[str, str]
    cwd: str
    argv: list[str]


def preload() -> None:
    """Import what runs import (and the modules named in ``BRAID_WARM_PRELOAD``, commas
    between), and load librosa's compiled kernels from numba's cache (2 s that each run
    decoding audio would pay); then check that no thread started."""
    extra = [n.strip() for n in os.environ.get("BRAID_WARM_PRELOAD", "").split(",") if n.strip()]
    for name in (*PRELOAD, *extra):
        # An optional part that is missing: the run that needs it imports it (and fails).
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # a run that decodes audio meets the error itself
        from tasks.media.audio import compile_kernels

        compile_kernels()
    if threading.active_count() > 1:  # a fork copies no thread but the one forking
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        print(f"warm: warning: threads started while preloading ({names})", flush=True)


def code_files() -> dict[str, int]:
    """Every imported module's file and its modification time."""
    files = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str):
            with contextlib.suppress(OSError):
                files[name] = os.stat(name).st_mtime_ns
    return files


def changed_file(files: dict[str, int]) -> str | None:
    """The first of ``files`` changed or gone since they were listed (about 5 ms for all)."""
    for name, mtime in files.items():
        try:
            if os.stat(name).st_mtime_ns != mtime:
                return name
        except OSError:
            return name
    return None


def serve(path: Path) -> _Request:
    """Serve launchers until stopped; returns only in a forked child, with its request.
    (The child runs ``prefect.engine``, or the module named by ``--module``.)"""
    base = dict(os.environ)  # what the zygote was started with
    preload()
    added = {n: v for n, v in os.environ.items() if n.startswith(IMPORT_TIME) and n not in base}
    files = code_files()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(64)
    zygote = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children: dict[int, socket.socket] = {}
    print(f"warm: serving {path} (pid {zygote})", flush=True)
    stale: str | None = None
    try:
        while True:
            ready, _, _ = select.select([listener.fileno(), wake_r], [], [], 5.0)
            if wake_r in ready:
                os.read(wake_r, 4096)
            _reap(children)
            if stale is not None and not children:
                _restart(listener, path, stale, base)
            if listener.fileno() not in ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:  # out of descriptors, or the launcher gave up: it starts cold
                continue
            # Code edited or upgraded since the imports: a run must not start on the old
            # one. It starts cold, and the zygote imports again once its children are done.
            stale = stale or changed_file(files)
            request = _receive(conn, base, added, stale)
            if request is None:
                if stale is not None and not children:
                    _restart(listener, path, stale, base)
                continue
            try:
                pid = os.fork()
            except OSError as exc:  # out of processes or memory: this run starts cold
                _refuse(conn, request.fds, f"no fork ({exc})")
                continue
            if pid == 0:  # the child: leave the zygote's loop with its request
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.close(wake_r)
                os.close(wake_w)
                listener.close()
                for other in children.values():
                    other.close()
                return request
            for fd in request.fds:  # the child's now; held here, the worker would never
                os.close(fd)  # see its output end
            children[pid] = conn
            with contextlib.suppress(OSError):  # the launcher is gone; its child sees it
                conn.sendall(json.dumps({"pid": pid}).encode())
            print(f"warm: flow-run process {pid} started", flush=True)
    finally:
        if os.getpid() == zygote:
            path.unlink(missing_ok=True)


def _restart(listener: socket.socket, path: Path, changed: str, env: dict[str, str]) -> None:
    """Import again, in a new image of this process started with the environment this one
    was (never returns): imports write to the environment (polars, torch's OpenMP)."""
    print(f"warm: {changed} changed since it was imported: importing again", flush=True)
    listener.close()
    path.unlink(missing_ok=True)
    os.execve(sys.executable, [sys.executable, "-m", "deployments.warm", *sys.argv[1:]], env)


def _receive(
    conn: socket.socket, base: dict[str, str], added: dict[str, str], stale: str | None
) -> _Request | None:
    """Read one launcher's request; answer ``fallback`` (and return None) when its run
    should start cold."""
    conn.settimeout(5)  # a launcher sends at once; one that does not must not stall the rest
    try:
        uid = _peer_uid(conn)
        data, fds, _, _ = socket.recv_fds(conn, _MESSAGE, 3)
    except OSError:
        conn.close()
        return None
    conn.settimeout(None)
    reason = None
    try:
        request = json.loads(data)
        env, cwd, argv = dict(request["env"]), str(request["cwd"]), list(request["argv"])
    except (ValueError, KeyError, TypeError):
        reason = "a request it could not read"
    if uid != os.getuid():
        reason = "a launcher of another user"
    elif len(fds) != 3:
        reason = "a request without its standard streams"
    elif stale is not None:
        reason = f"{stale} changed since the warm process imported it"
    elif reason is None and (changed := differences(base, env, added)):
        reason = f"the run's environment differs in {', '.join(changed[:5])}"
    if reason is not None:
        _refuse(conn, fds, reason)
        return None
    return _Request(conn, fds, env, cwd, argv)


def _refuse(conn: socket.socket, fds: list[int], reason: str) -> None:
    """Tell a launcher to start its run cold, and why (also in the zygote's log)."""
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"fallback": reason}).encode())
    conn.close()
    print(f"warm: cold start: {reason}", flush=True)


def _reap(children: dict[int, socket.socket]) -> None:
    """Tell each exited child's launcher how it ended."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        with contextlib.suppress(OSError):  # the launcher is gone
            conn.sendall(json.dumps({"status": status}).encode())
        conn.close()


def run(request: _Request, module: str = ENGINE) -> None:
    """In the forked child: become the launcher's ``python -m prefect.engine``."""
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request.env)
    os.chdir(request.cwd)
    sys.path[0] = request.cwd  # as `python -m` puts the working directory first
    sys.argv = [module, *request.argv]
    import prefect.context
    import prefect.logging.configuration

    # Prefect read its settings, and set up logging from them, when the zygote imported
    # it; read them again from the run's environment, as a new process would.
    prefect.context.refresh_global_settings_context()
    prefect.logging.configuration.setup_logging(incremental=False)

    def die_with_launcher() -> None:
        # The launcher never writes again; end of stream means it is gone, killed.
        with contextlib.suppress(OSError):
            request.conn.recv(1)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=die_with_launcher, name="braid-warm-launcher", daemon=True).start()
    # After the atexit handlers (logs sent, files closed), Python's last garbage collection
    # of everything torch, transformers and GX hold took 2-3 s per process (`braid run`
    # skips it the same way, see deployments/cli.py's FAST_EXIT). Registered first, this
    # runs last and freezes the survivors, which that collection then leaves to the OS.
    atexit.register(gc.freeze)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main() -> None:
    """``python -m deployments.warm serve SOCKET [--module M]`` runs the zygote; with
    any other arguments this is the launcher (the pools' command)."""
    if sys.argv[1:2] == ["serve"]:
        module = sys.argv[4] if sys.argv[3:4] == ["--module"] else ENGINE
        request = serve(Path(sys.argv[2]))
        run(request, module)  # only a forked child gets here; it exits as its module does
    else:
        launch()


if __name__ == "__main__":
    main()
