"""Prefect's temporary API server for one `braid run`, started before the heavy imports.

With no ``PREFECT_API_URL``, Prefect starts a temporary server (SQLite under
``PREFECT_HOME``) on a flow's first API call, after the process has imported the
pipeline and the server's own modules, and waits seconds for it to boot. Started here
first, the same server boots in its own process while this one imports, and the
flow's first call finds it up. It runs exactly as Prefect runs its own (the same app
factory and settings) and stops when the run is done, once the run's queued logs and
events are sent.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# What a server that lives for one run does without, on top of Prefect's ephemeral mode:
# registering every installed collection's block types (importing prefect-aws and the
# rest, about 1.5 CPU s a start; a block's own `save` registers its type), and the
# automation services (an automation acts on a long-lived server such as `braid up`'s).
ONE_RUN = {
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_ACTIONS_ENABLED": "false",
}


class TemporaryApi:
    """A Prefect API server process on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        prefect_spec = importlib.util.find_spec("prefect")
        assert prefect_spec is not None and prefect_spec.origin is not None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn",
             "--app-dir", str(Path(prefect_spec.origin).parent.parent),
             "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                 "PREFECT__SERVER_FINAL": "1", **ONE_RUN},
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the server answers its health check; raise with its output if it can't."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Prefect's temporary API exited with code {self.process.returncode}: "
                    + self._output()
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Prefect's temporary API did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def _output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


def start_early() -> TemporaryApi | None:
    """Start a temporary API now, before the heavy imports, unless the environment names a
    server; ``serving`` then decides whether the run uses it."""
    return None if os.environ.get("PREFECT_API_URL") else TemporaryApi()


@contextlib.contextmanager
def serving(api: TemporaryApi | None) -> Iterator[None]:
    """Point Prefect at ``api`` for the block, as Prefect points itself at its own.

    When the active profile names a server (``prefect config set PREFECT_API_URL=…``), or
    ephemeral mode is off, Prefect's own choice stands and ``api`` is stopped unused.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        temporary_settings,
    )

    if api is None or PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        if api is not None:
            api.stop()
        yield
        return
    api.wait_ready()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api.url}):
            yield
            _flush_to(api)
    finally:
        api.stop()


def _flush_to(api: TemporaryApi) -> None:
    """Send the logs and events still queued while the server is up. Left to exit, they
    would go after the server had stopped: lost, and the log handler's flush at exit
    waiting 5 s for them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
