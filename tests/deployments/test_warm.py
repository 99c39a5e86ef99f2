"""The warm flow-run launcher (deployments/warm.py): real zygote and launcher processes.

The zygote runs ``tests/deployments/warm_target.py`` in place of ``prefect.engine`` so
each test can see where its child ran; `braid up`'s tests run real flow runs through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import warm

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.deployments.warm_target"


@contextlib.contextmanager
def serving(home: Path, **extra_env: str) -> Iterator[dict[str, object]]:
    """A zygote for ``home``, listening; stopped (and its socket gone) afterwards."""
    path = warm.socket_path(home)
    log = (home / "zygote.log").open("w")
    # The target lives in tests/, which a run elsewhere finds through PYTHONPATH.
    env = {**os.environ, warm.SOCKET_ENV: str(path), "PYTHONPATH": str(ROOT), **extra_env}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.warm", "serve", str(path), "--module", TARGET],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_listening(path, process)
        yield {"process": process, "env": env, "log": home / "zygote.log", "path": path}
    finally:
        process.terminate()
        process.wait(20)
        log.close()
    assert not path.exists(), "the zygote left its socket behind"


def wait_listening(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, "the zygote exited"
        assert time.monotonic() < deadline, "the zygote did not listen within 120 s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    with serving(tmp_path_factory.mktemp("warm")) as served:
        yield served


def launch(env: dict[str, str], *args: str, cwd: Path = ROOT, **kwargs: object):
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.warm", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def report(stdout: str) -> dict[str, object]:
    return json.loads(stdout.splitlines()[0])


def test_a_run_starts_in_a_child_of_the_zygote_with_the_launchers_streams_env_and_cwd(
    zygote, tmp_path
) -> None:
    env = {**zygote["env"], "WARM_TEST_VALUE": "from the launcher", "PREFECT__FLOW_RUN_ID": "x"}
    launcher = launch(env, "exit", "3", cwd=tmp_path)
    stdout, stderr = launcher.communicate(timeout=60)
    assert stdout, stderr
    seen = report(stdout)
    assert launcher.returncode == 3
    assert seen["ppid"] == zygote["process"].pid  # warm: forked, not started
    assert seen["pid"] != launcher.pid
    assert seen["torch_loaded"] is True  # imported once, in the zygote
    assert seen["env"] == "from the launcher"
    assert seen["cwd"] == str(tmp_path) == seen["path0"]
    argv = seen["argv"]
    assert isinstance(argv, list) and argv[1:] == ["exit", "3"]  # as `python -m` sets them
    assert argv[0].endswith("warm_target.py")
    assert "to stderr" in stderr
    assert "warning" not in zygote["log"].read_text()  # no thread started before forking


def test_a_failing_run_exits_nonzero_with_its_traceback(zygote) -> None:
    launcher = launch(zygote["env"], "raise")
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 1
    assert "RuntimeError: the run failed" in stderr


def _started(launcher: subprocess.Popen[str]) -> dict[str, object]:
    assert launcher.stdout is not None
    return json.loads(launcher.stdout.readline())


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_the_workers_sigterm_reaches_the_run_and_its_exit_comes_back(zygote) -> None:
    launcher = launch(zygote["env"], "wait")
    child = int(_started(launcher)["pid"])  # type: ignore[call-overload]
    launcher.send_signal(signal.SIGTERM)
    stdout, _ = launcher.communicate(timeout=30)
    assert f"got signal {int(signal.SIGTERM)}" in stdout
    assert launcher.returncode == 7
    assert _gone(child)


def test_a_killed_launcher_takes_its_run_with_it(zygote) -> None:
    launcher = launch(zygote["env"], "wait")
    child = int(_started(launcher)["pid"])  # type: ignore[call-overload]
    launcher.kill()
    launcher.wait(10)
    assert _gone(child), "the run outlived its launcher"


def test_a_run_killed_by_a_signal_kills_its_launcher_with_the_same_signal(zygote) -> None:
    launcher = launch(zygote["env"], "wait")
    child = int(_started(launcher)["pid"])  # type: ignore[call-overload]
    os.kill(child, signal.SIGKILL)
    launcher.wait(30)
    assert launcher.returncode == -signal.SIGKILL


def test_a_run_whose_import_time_environment_differs_starts_cold(zygote) -> None:
    env = {**zygote["env"], "HF_HOME": "/elsewhere"}
    launcher = launch(env, "exit", "0")
    _, stderr = launcher.communicate(timeout=120)
    # Cold is `python -m prefect.engine` with the same arguments: an invalid run id here.
    assert "Invalid flow run id" in stderr
    assert launcher.returncode == 1
    assert "cold start: the run's environment differs in HF_HOME" in zygote["log"].read_text()


def test_without_a_zygote_the_launcher_is_prefects_engine(tmp_path) -> None:
    for env in (
        {k: v for k, v in os.environ.items() if k != warm.SOCKET_ENV},
        {**os.environ, warm.SOCKET_ENV: str(tmp_path / "nobody.sock")},
    ):
        launcher = launch(env, "not-a-run-id")
        _, stderr = launcher.communicate(timeout=120)
        assert "Invalid flow run id" in stderr, stderr
        assert launcher.returncode == 1


def test_only_import_time_variables_decide_and_polars_defaults_do_not_count() -> None:
    base = {"HF_HOME": "/a", "PREFECT_API_URL": "http://one", "PATH": "/bin"}
    assert warm.differences(base, {**base, "HF_HOME": "/b"}) == ["HF_HOME"]
    assert warm.differences(base, {**base, "PREFECT_API_URL": "http://two"}) == []
    assert warm.differences(base, {**base, "PYTHONPATH": "/x"}) == ["PYTHONPATH"]
    added = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:500,muzzy_decay_ms:1000"}
    zygote_env = {**base, **added}
    worker_imported_polars = {**base, **added}
    assert warm.differences(base, worker_imported_polars, added) == []
    assert warm.differences(zygote_env, base, added) == []
    tuned = {**base, "_RJEM_MALLOC_CONF": added["_RJEM_MALLOC_CONF"] + ",narenas:2"}
    assert warm.differences(base, tuned, added) == ["_RJEM_MALLOC_CONF"]


def test_a_long_home_gets_a_socket_path_a_unix_socket_can_have(tmp_path) -> None:
    home = tmp_path / ("x" * 120)
    path = warm.socket_path(home)
    assert len(os.fsencode(path)) <= 107
    assert path == warm.socket_path(home)  # the same stack finds the same socket


def test_code_changed_since_the_imports_starts_runs_cold_until_the_zygote_imports_again(
    tmp_path,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    module = code / "braid_warm_extra.py"
    module.write_text("VALUE = 1\n")
    pythonpath = f"{ROOT}{os.pathsep}{code}"
    with serving(tmp_path, PYTHONPATH=pythonpath, BRAID_WARM_PRELOAD="braid_warm_extra") as z:
        first = launch(z["env"], "exit", "0")
        stdout, _ = first.communicate(timeout=60)
        assert report(stdout)["ppid"] == z["process"].pid  # type: ignore[index]
        module.write_text("VALUE = 2\n")  # edited while the stack runs
        os.utime(module, ns=(time.time_ns(), time.time_ns() + 10**9))
        cold = launch(z["env"], "exit", "0")
        _, stderr = cold.communicate(timeout=120)
        assert "Invalid flow run id" in stderr  # `python -m prefect.engine`, not the old code
        log = z["log"]
        deadline = time.monotonic() + 120
        while log.read_text().count("serving") < 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, log.read_text()  # type: ignore[union-attr]
            time.sleep(0.2)
        wait_listening(z["path"], z["process"])  # type: ignore[arg-type]
        again = launch(z["env"], "exit", "0")
        stdout, _ = again.communicate(timeout=60)
        assert report(stdout)["ppid"] == z["process"].pid  # warm again, same process
        assert "braid_warm_extra.py changed since the warm process imported it" in log.read_text()  # type: ignore[union-attr]


def test_a_socket_in_a_folder_others_can_enter_is_not_used(tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    env = {**os.environ, warm.SOCKET_ENV: str(shared / "zygote.sock")}
    launcher = launch(env, "not-a-run-id")
    _, stderr = launcher.communicate(timeout=120)
    assert "Invalid flow run id" in stderr  # cold, without connecting
