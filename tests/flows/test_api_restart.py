"""The Prefect API server stopped in the middle of a `braid run` (a `prefect server start`
process of its own, SIGKILLed while the run stalls after extraction): back within the
client's retries, the run finishes; gone for longer, the run fails promptly with a clear
reason, and once the server is back the next plain run completes the lake, equal to one
that never lost its API, and marks the orphaned run Crashed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakes import assert_same_lake, run

pytestmark = pytest.mark.integration


class Server:
    """`prefect server start` on 127.0.0.1, its SQLite database under ``home``."""

    def __init__(self, home: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.home, self.process = home, None
        self.url = f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "prefect server start exited"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prefect server start did not answer within 120 s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # as a crashed or OOM-killed server goes
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("prefect-home"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def light(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two samples' captions, photos and sensor logs (what fails here is the API, not a
    decoder, so no audio or video and their seconds of set-up), and a lake of them made
    by a run that kept its API."""
    source = tmp_path_factory.mktemp("light-source")
    for folder in ("sample-0000", "sample-0001"):
        (source / folder).mkdir()
        for name in ("caption.txt", "image.jpg", "sensor.csv"):
            (source / folder / name).write_bytes((sample_dir / folder / name).read_bytes())
    lake = tmp_path_factory.mktemp("light-lake")
    run(source, lake)
    return source, lake


def start_run(source: Path, lake: Path, api: str, log: Path, **env: str) -> subprocess.Popen:
    """`braid run` against ``api``, stalling 1 s after extraction (``BRAID_STALL_AT``)."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    run_env |= {"PREFECT_API_URL": api, "BRAID_STALL_AT": "extracted:1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "run", str(source), "--lake", str(lake),
         "--inline-max-objects", "100"],
        env=run_env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_stall(run: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while "stalled at extracted" not in log.read_text():
        assert run.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached its stall point"
        time.sleep(0.1)


def flow_run_state(api: str, log: Path) -> str:
    """The state the API holds for the run that wrote ``log`` (the one flow run there is)."""
    from prefect.client.orchestration import SyncPrefectClient

    name = next(
        line.split("Flow run '")[1].split("'")[0]
        for line in log.read_text().splitlines()
        if "Flow run '" in line
    )
    with SyncPrefectClient(api) as client:
        (run,) = [r for r in client.read_flow_runs() if r.name == name]
    return run.state.type.value


@pytest.mark.slow  # the next test's outage covers the restart; this one, its short form
def test_a_server_restarted_within_the_clients_retries_is_waited_for(
    server: Server, light: tuple[Path, Path], tmp_path: Path
) -> None:
    (source, clean_lake), lake, log = light, tmp_path / "lake", tmp_path / "run.log"
    run = start_run(source, lake, server.url, log)
    wait_for_stall(run, log)
    server.kill()
    server.start()  # about 10 s: within the client's back-off (2 + 4 + 8 + 16 s)
    assert run.wait(300) == 0, log.read_text()[-3000:]
    assert_same_lake(lake, clean_lake)
    assert flow_run_state(server.url, log) == "COMPLETED"


def test_a_server_gone_past_the_retries_fails_the_run_and_the_next_run_completes_it(
    server: Server, light: tuple[Path, Path], tmp_path: Path
) -> None:
    (source, clean_lake), lake, log = light, tmp_path / "lake", tmp_path / "run.log"
    # One retry (2 s) instead of five (62 s), so the run gives up soon.
    run = start_run(source, lake, server.url, log, PREFECT_CLIENT_MAX_RETRIES="1")
    wait_for_stall(run, log)
    server.kill()
    try:
        code = run.wait(120)  # it fails cleanly, never hangs on the missing API
    finally:
        server.start()
    output = log.read_text()
    assert code == 1, output[-3000:]
    assert f"error: lost the Prefect API at {server.url}" in output
    assert flow_run_state(server.url, log) == "RUNNING"  # it could not say otherwise

    rerun_log = tmp_path / "rerun.log"
    rerun = start_run(source, lake, server.url, rerun_log, BRAID_STALL_AT="")
    assert rerun.wait(300) == 0, rerun_log.read_text()[-3000:]
    assert_same_lake(lake, clean_lake)
    assert flow_run_state(server.url, log) == "CRASHED"  # closed by the run that took over
    assert flow_run_state(server.url, rerun_log) == "COMPLETED"
