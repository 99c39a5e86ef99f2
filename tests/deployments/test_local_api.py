"""`braid run`'s early temporary API: a real Prefect server process that flows report to."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deployments import local_api

ROOT = Path(__file__).resolve().parents[2]

# As `braid run` does it, in a process of its own: no server configured, Prefect's
# settings read from that environment.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from deployments import local_api

    api = local_api.start_early()
    from prefect import flow, get_client
    from prefect.runtime import flow_run

    @flow(name="braid-local-api-check", log_prints=True)
    def check() -> str:
        print("the flow's last words")
        return str(flow_run.id)

    with local_api.serving(api):
        run_id = check()
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
            used = str(client.api_url).rstrip("/")
        # The server skips registering every collection's block types at start; a block's
        # own save registers its type, so saving and loading one still works.
        from prefect.blocks.system import Secret
        Secret(value="kept").save("braid-check", overwrite=True)
        secret = Secret.load("braid-check").get()
    print(json.dumps({"started": api.url, "used": used, "completed": state.is_completed(),
                      "serving_after": api.process.poll() is None, "run_id": run_id, "secret": secret}))
    """
)


# Every `braid run` in test_cli goes through this server; here, what it logs and stops.
@pytest.mark.slow
def test_a_flow_reports_to_the_server_started_before_the_imports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["used"] == seen["started"]  # not a server of Prefect's own
    assert seen["completed"]
    assert seen["secret"] == "kept"
    # Stopped as the block ends, once the queued logs are sent: the last line the flow
    # logged is in the server's database (left to exit, it went after the server stopped).
    assert not seen["serving_after"]
    assert "Starting temporary server" not in result.stderr
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        logged = [m for (m,) in db.execute(
            "SELECT message FROM log WHERE flow_run_id = ?", [seen["run_id"].replace("-", "")]
        )] + [m for (m,) in db.execute(
            "SELECT message FROM log WHERE flow_run_id = ?", [seen["run_id"]]
        )]  # fmt: skip
    assert "the flow's last words" in logged, logged


def test_a_configured_server_is_used_instead(monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert local_api.start_early() is None


def test_a_server_that_cannot_start_says_why(monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "nonsense://")
    api = local_api.start_early()
    assert api is not None
    try:
        with pytest.raises(RuntimeError, match="exited with code"):
            api.wait_ready(timeout=120)
    finally:
        api.stop()
