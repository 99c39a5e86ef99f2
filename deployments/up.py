"""`braid up` / `braid down`: the local event-driven stack in one command.

Starts, in order: a Prefect server on 127.0.0.1 (SQLite under the stack's home, or the
PostgreSQL database given), the local process work pool, the deployments of
prefect.yaml (`prefect deploy --all`), the warm flow-run process (deployments/warm.py),
a worker per pool, and the folder watcher. Every process
it starts is recorded (pid and command) in ``<home>/up.json``; Ctrl-C, or `braid down`
from another shell, stops exactly those, the worker with SIGINT as Prefect expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deployments import warm

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "braid-process"  # ingest and backfill
CHILD_POLL_S = "3"  # how often the modality pools' workers ask for child runs
MODALITY_POOLS = tuple(f"braid-{m}" for m in ("image", "text", "audio", "video", "timeseries"))
STATE_FILE = "up.json"


@dataclass
class Stack:
    """Where the stack lives and how to reach it."""

    home: Path
    landing: Path
    lake: Path
    port: int
    database_url: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def warm_socket(self) -> Path:
        """Where the stack's warm flow-run process listens (deployments/warm.py)."""
        return warm.socket_path(self.home)

    def env(self) -> dict[str, str]:
        """The environment every process of the stack runs with."""
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "GX_ANALYTICS_ENABLED": "false",
            # Workers and runners poll every 10 s by default: too slow for files landing now.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            # No prefetch: a worker would submit ingest's window-closed run (due in 10 s)
            # at once, and that run would hold ingest's one concurrency slot while the
            # run started by the same event waits. And a run waiting for the slot asks
            # again in 2 s, not 30.
            "PREFECT_WORKER_PREFETCH_SECONDS": "0",
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
            # The server's SQLite answers 503 when a write meets another ("database is
            # locked"); under load (eight processes on two cores) five retries, about a
            # minute of back-off, were not always enough for a run to record its tasks.
            # Seven retries back off for about four minutes, and the server logs each one.
            "PREFECT_CLIENT_MAX_RETRIES": "7",
            "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
            "BRAID_LAKE": str(self.lake),
            warm.SOCKET_ENV: str(self.warm_socket),
            "PWD": str(PROJECT_ROOT),  # prefect.yaml's pull step runs flows from the project root
        }
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        return env


def _log(stack: Stack, name: str) -> IO[bytes]:
    logs = stack.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return (logs / f"{name}.log").open("ab")


def _start(
    stack: Stack,
    name: str,
    args: list[str],
    started: dict[str, dict[str, object]],
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    log = _log(stack, name)
    process = subprocess.Popen(
        args, cwd=PROJECT_ROOT, env=stack.env() | (env or {}), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C in this terminal reaches us; we stop children ourselves
    )  # fmt: skip
    started[name] = {"pid": process.pid, "args": args}
    _save(stack, started)
    return process


def _save(stack: Stack, started: dict[str, dict[str, object]]) -> None:
    (stack.home / STATE_FILE).write_text(
        json.dumps(
            {"api_url": stack.api_url, "supervisor": os.getpid(), "processes": started}, indent=2
        )
    )


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def wait_for_api(
    url: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the Prefect API answers its health check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect API at {url} did not answer within {timeout:.0f} s")


def wait_for_zygote(path: Path, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Block until the warm flow-run process listens, so the stack's first runs start warm;
    if it exited or is slow, runs start cold (a warning says so) and the stack still serves."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"warning: the warm flow-run process is not serving ({path}); flow runs "
                  "start cold, each importing Prefect and the pipeline", file=sys.stderr)  # fmt: skip
            return
        time.sleep(0.2)


def _run(stack: Stack, name: str, args: list[str]) -> None:
    """Run a setup command to completion; fail with its log's tail if it fails."""
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=stack.env(), capture_output=True, text=True)
    with _log(stack, name) as log:
        log.write((result.stdout + result.stderr).encode())
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"`{' '.join(args[2:])}` failed: " + " | ".join(tail))


def create_process_pools(api_url: str, names: tuple[str, ...], command: str | None = None) -> None:
    """Create the local process work pools that do not exist yet; ``command``, when
    given, is their flow runs' default command (a pool that exists keeps its own)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    if command is not None:
        template["variables"]["properties"]["command"]["default"] = command
    with SyncPrefectClient(api_url) as client:
        for name in names:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template)
                )


def warm_command() -> str:
    """The pools' flow-run command under `braid up`: the warm launcher, which starts the
    run as ``python -m prefect.engine`` does, from a process that imported it already."""
    return f"{shlex.quote(sys.executable)} -m deployments.warm"


def up(stack: Stack) -> dict[str, dict[str, object]]:
    """Start the whole stack and return what was started (also written to up.json)."""
    for folder in (stack.home, stack.landing, stack.lake):
        folder.mkdir(parents=True, exist_ok=True)
    started: dict[str, dict[str, object]] = {}
    try:
        server = _start(stack, "server", _prefect("server", "start", "--host", "127.0.0.1",
                                                  "--port", str(stack.port)), started)  # fmt: skip
        wait_for_api(stack.api_url, process=server)
        create_process_pools(stack.api_url, (WORK_POOL, *MODALITY_POOLS), warm_command())
        _run(stack, "deploy", _prefect("--no-prompt", "deploy", "--all"))
        # Before the workers: it imports for seconds (while they start), and a run that
        # finds it not yet listening starts cold, as it would without it.
        zygote = _start(stack, "warm", [sys.executable, "-m", "deployments.warm", "serve",
                                        str(stack.warm_socket)], started)  # fmt: skip
        for pool in (WORK_POOL, *MODALITY_POOLS):
            name = "worker" if pool == WORK_POOL else f"worker-{pool.removeprefix('braid-')}"
            _start(
                stack,
                name,
                _prefect("worker", "start", "--pool", pool, "--type", "process"),
                started,
                # Each poll is two writes to the server's SQLite (the queue's and the
                # deployments' last poll). Seven workers polling every second made a
                # write transaction that read first fail ("database is locked") often
                # enough that creating a child run took its client's back-off of two
                # minutes. Child runs wait for their worker's next poll: 3 s at most.
                env=None if pool == WORK_POOL else {"PREFECT_WORKER_QUERY_SECONDS": CHILD_POLL_S},
            )
        _start(
            stack,
            "watcher",
            [sys.executable, "-m", "deployments.cli", "watch", str(stack.landing)],
            started,
        )
        wait_for_zygote(stack.warm_socket, zygote)
    except BaseException:
        stop(started)
        (stack.home / STATE_FILE).unlink(missing_ok=True)
        raise
    return started


def stop(started: dict[str, dict[str, object]], timeout: float = 20.0) -> list[str]:
    """Stop the recorded processes: workers (SIGINT, their clean stop) and the watcher
    together, then the server (SIGTERM); whatever outlives ``timeout`` gets SIGKILL."""
    clients = {n: i for n, i in started.items() if n != "server"}
    server = {n: i for n, i in started.items() if n == "server"}
    stopped: list[str] = []
    for group in (clients, server):
        pids = {}
        for name, info in group.items():
            pid = int(info["pid"])  # type: ignore[call-overload]
            try:
                os.killpg(pid, signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
            except ProcessLookupError:
                continue
            pids[name] = pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
            time.sleep(0.2)
        for name, pid in pids.items():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                # Reap it now: a killed child left unreaped stays a zombie after this
                # process exits wherever init does not reap orphans (some containers).
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            stopped.append(name)
    return stopped


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (braid down from another shell): ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    if _zombie(pid):  # it exited since the wait above: reap it if it is ours
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _zombie(pid: int) -> bool:
    """Exited and waiting for its parent to reap it: as good as gone (Linux's /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def down(home: Path) -> list[str]:
    """Stop a stack started by `braid up` with this home; returns what was stopped."""
    state = home / STATE_FILE
    if not state.exists():
        raise FileNotFoundError(f"no running stack recorded in {state}")
    recorded = json.loads(state.read_text())
    started = recorded["processes"]
    supervisor = recorded.get("supervisor")
    if isinstance(supervisor, int) and supervisor != os.getpid() and _alive(supervisor):
        # `braid up` is running: it stops its own processes and reaps them, so none is
        # left a zombie, and removes the state file. Whatever outlives it is killed below.
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 60  # its two stop windows (workers, server) and more
        while time.monotonic() < deadline and _alive(supervisor):
            time.sleep(0.1)
    left = {name: info for name, info in started.items() if _alive(int(info["pid"]))}
    stop(left)
    state.unlink(missing_ok=True)
    return list(started)
