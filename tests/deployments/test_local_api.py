"""`braid run`'s early temporary API: a real Prefect server process that flows report to."""

from __future__ import annotations

import pytest

from deployments import local_api


def test_a_flow_reports_to_the_server_started_before_the_imports(monkeypatch) -> None:
    from prefect import flow, get_client

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    api = local_api.start_early()
    assert api is not None

    @flow(name="braid-local-api-check")
    def check() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    try:
        with local_api.serving(api):
            run_id = check()
            with get_client(sync_client=True) as client:
                assert str(client.api_url).rstrip("/") == api.url
                assert client.read_flow_run(run_id).state.is_completed()
        assert api.process.poll() is None  # it serves until the command exits
    finally:
        api.stop()
    assert api.process.poll() is not None


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
