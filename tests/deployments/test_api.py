"""`braid api` as a client meets it: a lake landed by the real pipeline, a real uvicorn server.

Answers are checked against DuckDB queries on the same lake; the OpenAPI schema drives a
fuzz run (schemathesis) that must find no server errors.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tasks.lake.query import connect
from tasks.serve.serving import search_text

BRAID = [sys.executable, "-m", "deployments.cli"]
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_SAMPLES = 4
pytestmark = pytest.mark.integration


def braid(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        # A fresh Prefect home migrates its database first; a busy CI machine needs longer.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        **env,
    }
    environment.pop("PREFECT_API_URL", None)  # the embedded API, as `braid run` uses by default
    return subprocess.run(
        [*BRAID, *args], capture_output=True, text=True, env=environment, timeout=600
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    home, samples, lake = root / "prefect", root / "samples", root / "lake"
    for args in (("samples", str(samples), "--n", str(N_SAMPLES)), ("run", str(samples), "--lake", str(lake))):  # fmt: skip
        result = braid(*args, home=home)
        assert result.returncode == 0, f"braid {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return lake


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process is not None:
            assert process.poll() is None, f"braid api exited with {process.returncode}"
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`braid api` over the lake, in its own process, as an operator starts it."""
    port = free_port()
    home = tmp_path_factory.mktemp("api-home")
    env = {**os.environ, "BRAID_API_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(home)}
    # Output goes to files, not pipes: a pipe nobody reads fills with access-log lines and
    # then blocks the server's event loop.
    with (home / "out.log").open("w+") as out, (home / "err.log").open("w+") as err:
        process = subprocess.Popen(
            [*BRAID, "api", "--lake", str(lake), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert process.returncode == 0 and "Application shutdown complete" in stderr, stderr[-3000:]
    assert f"braid api: {url}" in stdout
    assert "Traceback" not in stderr and " 500 " not in stderr, stderr[-3000:]


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def duck(lake: Path) -> Iterator[Any]:
    """The same lake, in DuckDB: what the answers must agree with."""
    con = connect(lake)
    yield con
    con.close()


def rows(duck: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = duck.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def assert_error(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return body


# --- health and auth ---------------------------------------------------------------------------


def test_health_is_open(server: str) -> None:
    response = httpx.get(f"{server}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "lake": "ready"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "longer", "basic", "no-scheme", "empty"],
)
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/objects"),
        ("GET", "/samples/sample-0000"),
        ("GET", "/quarantine"),
        ("GET", "/stats"),
        ("POST", "/search"),
        ("GET", "/openapi.json"),
        ("GET", "/no-such-route"),
    ],
)
def test_everything_but_health_needs_the_token(
    server: str, method: str, path: str, headers: dict[str, str]
) -> None:
    response = httpx.request(method, f"{server}{path}", headers=headers, content=b"{bad json")
    body = assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body == {"error": "missing or invalid bearer token"}


def test_openapi_schema_declares_models_limits_and_bearer_auth(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "the token of `braid api` ($BRAID_API_TOKEN)",
        }
    }
    paths = spec["paths"]
    assert set(paths) == {"/health", "/samples/{sample_id}", "/objects", "/quarantine", "/search", "/stats"}  # fmt: skip
    assert "security" not in paths["/health"]["get"]
    for path, method in (("/objects", "get"), ("/search", "post"), ("/stats", "get")):
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
        assert paths[path][method]["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}  # fmt: skip
    limit = next(p for p in paths["/objects"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
    modality = next(p for p in paths["/objects"]["get"]["parameters"] if p["name"] == "modality")
    assert modality["schema"]["anyOf"][0]["enum"] == ["image", "text", "audio", "video", "timeseries", "unknown"]  # fmt: skip
    search = spec["components"]["schemas"]["SearchRequest"]
    assert search["properties"]["k"]["maximum"] == 100 and search["additionalProperties"] is False
    sample = paths["/samples/{sample_id}"]["get"]["responses"]
    assert sample["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SampleDetail"}  # fmt: skip
    assert "404" in sample
    image = spec["components"]["schemas"]["ImageFeatures"]["properties"]
    assert {"width", "height", "phash", "embedding"} <= set(image)


# --- answers against DuckDB --------------------------------------------------------------------


def test_objects_pages_match_duckdb(api: httpx.Client, duck: Any) -> None:
    expected = rows(
        duck, "SELECT object_id, modality, status, sample_id FROM objects ORDER BY object_id"
    )
    assert len(expected) == 5 * N_SAMPLES + 8  # every sample's five objects and the bad files

    seen, cursor, pages = [], None, 0
    while True:
        response = api.get(
            "/objects", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(expected) and page["limit"] == 7
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == -(-len(expected) // 7)
    assert [
        {k: o[k] for k in ("object_id", "modality", "status", "sample_id")} for o in seen
    ] == expected

    by_offset = api.get("/objects", params={"limit": 5, "offset": 10}).json()
    assert [o["object_id"] for o in by_offset["items"]] == [o["object_id"] for o in expected[10:15]]


def test_objects_filters_match_duckdb(api: httpx.Client, duck: Any) -> None:
    for params, where in (
        ({"modality": "image"}, "modality = 'image'"),
        ({"status": "quarantined"}, "status = 'quarantined'"),
        ({"modality": "image", "status": "landed"}, "modality = 'image' AND status = 'landed'"),
        ({"modality": "unknown"}, "modality = 'unknown'"),
    ):
        answer = api.get("/objects", params={**params, "limit": 500}).json()
        expected = rows(duck, f"SELECT object_id FROM objects WHERE {where} ORDER BY object_id")
        assert [o["object_id"] for o in answer["items"]] == [r["object_id"] for r in expected]
        assert answer["total"] == len(expected) > 0, params

    [latest] = rows(duck, "SELECT max(landed_at) AS t FROM objects")
    since = api.get("/objects", params={"since": latest["t"].isoformat()}).json()
    [count] = rows(duck, "SELECT count(*) AS n FROM objects WHERE landed_at >= $t", t=latest["t"])
    assert since["total"] == count["n"] >= 1
    assert api.get("/objects", params={"since": "2000-01-01"}).json()["total"] == 5 * N_SAMPLES + 8
    assert api.get("/objects", params={"since": "2999-01-01T00:00:00+02:00"}).json()["total"] == 0


def test_quarantine_matches_duckdb(api: httpx.Client, duck: Any) -> None:
    everything = api.get("/quarantine").json()
    expected = rows(duck, "SELECT object_id, stage, reason FROM quarantine ORDER BY object_id")
    assert [
        {k: q[k] for k in ("object_id", "stage", "reason")} for q in everything["items"]
    ] == expected
    decode = api.get("/quarantine", params={"stage": "decode"}).json()
    assert {q["uri"].rsplit("/", 1)[1] for q in decode["items"]} == {"truncated.jpg", "bomb.png", "nostreams.mp4"}  # fmt: skip
    mislabelled = api.get("/quarantine", params={"reason": "MISLABELLED", "limit": 1}).json()
    assert mislabelled["total"] == 2 and len(mislabelled["items"]) == 1
    second = api.get("/quarantine", params={"reason": "mislabelled", "cursor": mislabelled["next_cursor"]}).json()  # fmt: skip
    assert second["next_cursor"] is None
    assert {q["uri"].rsplit("/", 1)[1] for q in mislabelled["items"] + second["items"]} == {"image.mp3", "notes.jpg"}  # fmt: skip


def test_sample_answers_match_duckdb(api: httpx.Client, duck: Any) -> None:
    response = api.get("/samples/sample-0000")
    assert response.status_code == 200, response.text
    sample = response.json()
    expected = rows(duck, "SELECT object_id, modality, status FROM objects WHERE sample_id = 'sample-0000' ORDER BY modality, uri, object_id")  # fmt: skip
    assert [
        {k: o[k] for k in ("object_id", "modality", "status")} for o in sample["objects"]
    ] == expected
    for modality in ("image", "text", "audio", "video", "timeseries"):
        [row] = sample["features"][modality]
        assert "embedding" not in row and "audio_embedding" not in row
        [truth] = rows(duck, f"SELECT * FROM {modality}_features WHERE sample_id = 'sample-0000'")
        assert row["object_id"] == truth["object_id"] and row["model_id"] == truth["model_id"]
        assert row["embedding_dim"] == truth["embedding_dim"]
    [image] = rows(
        duck, "SELECT width, height, phash FROM image_features WHERE sample_id = 'sample-0000'"
    )
    assert {k: sample["features"]["image"][0][k] for k in image} == image
    [words] = rows(duck, "SELECT words FROM text_features WHERE sample_id = 'sample-0000'")
    assert sample["features"]["text"][0]["words"] == words["words"]
    fused = sample["fused"]
    assert fused["modalities"] == ["image", "text", "audio", "video", "timeseries"]
    assert all(fused[f"has_{m}"] for m in fused["modalities"]) and fused["n_objects"] == 5
    assert "embedding" not in fused and "text_embedding" not in fused
    assert sample["quarantine"] == []

    with_vectors = api.get("/samples/sample-0000", params={"vectors": "true"}).json()
    [truth] = rows(
        duck, "SELECT embedding::FLOAT[] AS e FROM fused WHERE sample_id = 'sample-0000'"
    )
    assert with_vectors["fused"]["embedding"] == pytest.approx(truth["e"], abs=1e-6)
    assert len(with_vectors["features"]["text"][0]["embedding"]) == 384


def test_the_bad_files_sample_lists_its_quarantine(api: httpx.Client, duck: Any) -> None:
    bad = api.get("/samples/_bad").json()
    assert bad["fused"] is None
    assert all(o["status"] == "quarantined" for o in bad["objects"]) and len(bad["objects"]) == 8
    expected = rows(
        duck, "SELECT object_id FROM quarantine WHERE sample_id = '_bad' ORDER BY object_id"
    )
    assert sorted(q["object_id"] for q in bad["quarantine"]) == [r["object_id"] for r in expected]


def test_unknown_samples_are_404(api: httpx.Client) -> None:
    body = assert_error(api.get("/samples/sample-9999"), 404)
    assert body["error"] == "no sample 'sample-9999'"
    assert_error(api.get("/samples/a%2Fb%2F..%2Fc"), 404)
    assert_error(api.get("/samples/'; DROP VIEW objects; --"), 404)
    assert_error(api.post("/search", json={"sample_id": "sample-9999"}), 404)
    body = assert_error(api.post("/search", json={"sample_id": "_bad"}), 404)
    assert "no fused embedding" in body["error"]


def test_search_by_sample_matches_duckdb(api: httpx.Client, duck: Any) -> None:
    response = api.post("/search", json={"sample_id": "sample-0001", "k": 2})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = rows(
        duck,
        """
        SELECT b.sample_id, array_cosine_similarity(a.embedding, b.embedding) AS score
        FROM fused AS a, fused AS b
        WHERE a.sample_id = 'sample-0001' AND b.sample_id <> a.sample_id
        ORDER BY score DESC, b.sample_id LIMIT 2
        """,
    )
    assert answer["by"] == "sample_id"
    assert [h["sample_id"] for h in answer["hits"]] == [r["sample_id"] for r in expected]
    assert [h["score"] for h in answer["hits"]] == pytest.approx([r["score"] for r in expected])
    everyone = api.post("/search", json={"sample_id": "sample-0001", "k": 100}).json()["hits"]
    assert len(everyone) == N_SAMPLES - 1 and "sample-0001" not in {
        h["sample_id"] for h in everyone
    }
    filtered = api.post("/search", json={"sample_id": "sample-0001", "modality": "audio"}).json()
    assert {h["sample_id"] for h in filtered["hits"]} == {h["sample_id"] for h in everyone}


def test_search_by_text_matches_the_cli_search(api: httpx.Client, duck: Any, lake: Path) -> None:
    [caption] = rows(
        duck, "SELECT sample_id, preview FROM text_features ORDER BY sample_id LIMIT 1"
    )
    response = api.post("/search", json={"text": caption["preview"], "k": 3})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["by"] == "text" and answer["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    expected = search_text(lake, caption["preview"], k=3).to_dicts()
    assert [h["sample_id"] for h in answer["hits"]] == [r["sample_id"] for r in expected]
    assert [h["score"] for h in answer["hits"]] == pytest.approx(
        [r["score"] for r in expected], abs=1e-4
    )
    assert (
        answer["hits"][0]["sample_id"] == caption["sample_id"] and answer["hits"][0]["score"] > 0.99
    )
    assert answer["hits"][0]["text"] == caption["preview"]
    only_video = api.post(
        "/search", json={"text": "anything", "modality": "video", "k": 100}
    ).json()
    assert len(only_video["hits"]) == N_SAMPLES


def test_stats_match_duckdb(api: httpx.Client, duck: Any) -> None:
    stats = api.get("/stats").json()
    expected = rows(
        duck, "SELECT modality, status, count(*) AS count FROM objects GROUP BY ALL ORDER BY ALL"
    )
    assert stats["by_modality_status"] == expected
    [day] = rows(
        duck,
        "SELECT DISTINCT CAST(discovered_at AT TIME ZONE 'UTC' AS DATE)::VARCHAR AS d FROM objects",
    )
    assert {d["day"] for d in stats["by_day"]} == {day["d"]}
    assert (
        sum(d["count"] for d in stats["by_day"]) == stats["totals"]["objects"] == 5 * N_SAMPLES + 8
    )
    assert stats["totals"]["samples_fused"] == N_SAMPLES
    assert stats["totals"]["quarantined"] == 8
    [run] = stats["runs"]
    [truth] = rows(duck, "SELECT DISTINCT flow_run_id FROM objects")
    assert run["flow_run_id"] == truth["flow_run_id"]
    assert (run["objects"], run["landed"], run["quarantined"], run["samples_fused"]) == (5 * N_SAMPLES + 8, 5 * N_SAMPLES, 8, N_SAMPLES)  # fmt: skip
    assert 0 < run["seconds"] < 600
    stages = {s["stage"]: s["count"] for s in stats["quarantine_by_stage"]}
    assert stages == {"discover": 1, "sniff": 4, "decode": 3}


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, params, status",
    [
        ("/objects", {"limit": 0}, 422),
        ("/objects", {"limit": 10000}, 422),
        ("/objects", {"limit": "ten"}, 422),
        ("/objects", {"offset": -1}, 422),
        ("/objects", {"modality": "smell"}, 422),
        ("/objects", {"status": "lost"}, 422),
        ("/objects", {"since": "yesterday"}, 422),
        ("/objects", {"since": "0001-01-01T00:00:00+14:00"}, 422),
        ("/objects", {"cursor": "not-a-cursor"}, 400),
        ("/objects", {"cursor": "k1.AAAA", "offset": 3}, 400),
        ("/quarantine", {"limit": 501}, 422),
        ("/quarantine", {"modality": "smell"}, 422),
        ("/quarantine", {"reason": "x" * 301}, 422),
        ("/samples/sample-0000", {"vectors": "maybe"}, 422),
        ("/stats", {"runs": 0}, 422),
    ],
)
def test_bad_parameters_are_4xx_json(
    api: httpx.Client, path: str, params: dict, status: int
) -> None:
    body = assert_error(api.get(path, params=params), status)
    if status == 422:
        assert body["detail"] and body["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{bad json", "JSON"),
        (b"[]", "valid dictionary"),
        (b"{}", "exactly one of text and sample_id"),
        (b'{"text": "a cat", "sample_id": "sample-0000"}', "exactly one of text and sample_id"),
        (b'{"text": ""}', "at least 1 character"),
        (b'{"text": "a cat", "k": 0}', "greater than or equal to 1"),
        (b'{"text": "a cat", "k": 101}', "less than or equal to 100"),
        (b'{"text": "a cat", "k": "3"}', "valid integer"),
        (b'{"text": "a cat", "modality": "smell"}', "'image'"),
        (b'{"text": "a cat", "top": 3}', "Extra inputs"),
        (b'{"sample_id": "\\ud800"}', "string"),
        (b'{"text": "' + b"x" * 5000 + b'"}', "at most 4096 characters"),
    ],
)
def test_bad_search_bodies_are_422_json(api: httpx.Client, body: bytes, fragment: str) -> None:
    answer = assert_error(
        api.post("/search", content=body, headers={"Content-Type": "application/json"}), 422
    )
    assert fragment in answer["error"], answer


def test_oversized_bodies_and_other_methods_are_refused(api: httpx.Client) -> None:
    assert_error(api.post("/search", content=b"x" * (65 * 1024), headers={"Content-Type": "application/json"}), 413)  # fmt: skip

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts what arrives
        for _ in range(100):
            yield b" " * 1024

    assert_error(api.post("/search", content=chunks()), 413)
    assert_error(api.delete("/objects"), 405)
    assert_error(api.get("/no-such-route"), 404)


# --- the schema, fuzzed ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(f"{server}/openapi.json", headers=AUTH, timeout=30)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/samples/{sample_id}"),
    ("GET", "/objects"),
    ("GET", "/quarantine"),
    ("POST", "/search"),
    ("GET", "/stats"),
]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# schemathesis's own pytest integration (`from_fixture`) does not run under pytest 9, so each
# operation's strategy is driven by Hypothesis here: valid inputs, then invalid ones.
@pytest.mark.parametrize(
    "method, path, mode",
    [
        (method, path, mode)
        for method, path in OPERATIONS
        for mode in GenerationMode
        # /health takes nothing, so nothing about it can be invalid.
        if path != "/health" or mode is GenerationMode.POSITIVE
    ],
    ids=lambda v: v.value if isinstance(v, GenerationMode) else v,
)
def test_fuzzing_finds_no_server_errors_and_no_undocumented_answers(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=60)

    no_server_error()


# --- a lake that is not there yet, and one that grows -------------------------------------------


def serve_in_thread(app: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def test_serves_503_until_a_lake_lands_then_sees_new_parts(lake: Path, tmp_path: Path) -> None:
    from deployments.api import make_app

    target = tmp_path / "lake"
    url, server, thread = serve_in_thread(
        make_app(str(target), TOKEN, check_every=0.0, warm_up=False)
    )
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            assert client.get("/health").json() == {"status": "ok", "lake": "missing"}
            for path in ("/objects", "/quarantine", "/stats", "/samples/sample-0000"):
                body = assert_error(client.get(path), 503)
                assert "no lake at" in body["error"]
            assert_error(client.post("/search", json={"sample_id": "sample-0000"}), 503)

            # The pipeline lands: parts appear one table at a time, the catalog last.
            shutil.copytree(lake / "objects", target / "objects")
            assert client.get("/objects").json()["total"] == 5 * N_SAMPLES + 8
            assert client.get("/samples/sample-0000").json()["fused"] is None
            for table in ("model_sets", "fused", "image_features", "text_features", "quarantine"):
                shutil.copytree(lake / table, target / table)
            assert client.get("/samples/sample-0000").json()["fused"]["n_objects"] == 5
            assert client.post("/search", json={"sample_id": "sample-0000"}).status_code == 200
            assert client.get("/health").json()["lake"] == "ready"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    # Never the catalog file: the pipeline swaps it in atomically and must not find it held.
    held = [
        os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _is_link(fd)
    ]
    assert not [path for path in held if path.endswith("braid.duckdb")]


def _is_link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return True


# --- the command -------------------------------------------------------------------------------


def test_braid_api_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BRAID_API_TOKEN"}
    result = subprocess.run(
        [*BRAID, "api", "--lake", str(tmp_path), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "braid api: error: no API token: pass --token-block NAME (a Prefect Secret block) or set BRAID_API_TOKEN"
    ]


def test_token_from_a_prefect_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from deployments.api import load_token

    class Stored:
        def __init__(self, value: Any) -> None:
            self.value = value

        def get(self) -> Any:
            return self.value

    blocks = {"api-token": Stored("from the block"), "blank": Stored("  ")}

    def load(name: str) -> Stored:
        if name not in blocks:
            raise ValueError(f"Unable to find block document named {name}")
        return blocks[name]

    monkeypatch.setattr(Secret, "load", load)
    monkeypatch.setenv("BRAID_API_TOKEN", "from the environment")
    assert load_token("api-token") == "from the block"
    assert load_token() == "from the environment"
    with pytest.raises(ValueError, match="could not load Secret block 'missing'"):
        load_token("missing")
    with pytest.raises(ValueError, match="does not hold a non-empty string"):
        load_token("blank")


def test_braid_report_on_the_pipeline_lake(lake: Path, tmp_path: Path) -> None:
    """The report command, on the lake this module already landed."""
    from tasks.serve.report import COST_PER_STAGE, TITLES

    result = braid("report", "--lake", str(lake), "--out", str(tmp_path / "r.html"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {tmp_path / 'r.html'}"
    html = (tmp_path / "r.html").read_text()
    for title in TITLES:
        if title != COST_PER_STAGE or (lake / "costs").is_dir():
            assert f"<h2>{title}</h2>" in html, title
    assert "http://" not in html and "https://" not in html
    missing = braid("report", "--lake", str(tmp_path / "none"), home=tmp_path)
    assert missing.returncode == 1 and "no lake at" in missing.stderr
