"""The API's pages: cursors and offsets over the tiny lake's objects and quarantine."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from deployments import paging
from deployments.paging import CursorError, PageRequest
from tasks.serve import serving


@pytest.fixture
def con(tiny_lake: Path):
    connection = serving.open_snapshot(tiny_lake)
    yield connection
    connection.close()


def test_objects_pages_by_cursor_and_by_offset_cover_every_object_once(con) -> None:
    every = [r[0] for r in con.execute("SELECT object_id FROM objects ORDER BY 1").fetchall()]
    assert len(every) == 9  # bad-decode once: its landed row replaced its quarantined one

    seen, cursor = [], None
    while True:
        page = paging.objects_page(con, page=PageRequest(limit=4, cursor=cursor))
        assert page["total"] == 9 and len(page["items"]) <= 4
        seen += [item["object_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == every

    by_offset = paging.objects_page(con, page=PageRequest(limit=3, offset=6))
    assert [i["object_id"] for i in by_offset["items"]] == every[6:9]
    assert by_offset["next_cursor"] is None
    assert set(by_offset["items"][0]) == set(serving.OBJECT_COLUMNS)


def test_objects_filter_by_modality_status_and_landing_time(con, tiny) -> None:
    images = paging.objects_page(con, modality="image", status="landed")
    assert [i["object_id"] for i in images["items"]] == ["bad-decode", "s0-image", "s1-image"]
    quarantined = paging.objects_page(con, status="quarantined")
    assert [i["object_id"] for i in quarantined["items"]] == ["bad-sniff"]
    recent = paging.objects_page(con, since=tiny.T2 - timedelta(minutes=1))
    assert {i["object_id"] for i in recent["items"]} == {"bad-decode", "s3-text"}
    assert paging.objects_page(con, since=tiny.T2 + timedelta(seconds=1))["total"] == 0
    assert paging.objects_page(con, modality="smell")["items"] == []


def test_quarantine_filters_by_stage_and_reason_in_any_case(con) -> None:
    everything = paging.quarantine_page(con)
    assert [i["object_id"] for i in everything["items"]] == ["bad-sniff"]  # bad-decode re-landed
    assert paging.quarantine_page(con, stage="sniff")["total"] == 1
    assert paging.quarantine_page(con, stage="decode")["total"] == 0
    assert paging.quarantine_page(con, reason="UNRECOGNISED")["total"] == 1
    # The reason is matched as text: % and _ are not wildcards.
    assert paging.quarantine_page(con, reason="%")["total"] == 0


@pytest.mark.parametrize(
    "cursor", ["", "abc", "k1.", "k1.!!!", "k1.gA==", paging.encode_cursor("x")[:-1] + "*"]
)
def test_cursors_not_handed_out_are_refused(con, cursor: str) -> None:
    with pytest.raises(CursorError):
        paging.objects_page(con, page=PageRequest(cursor=cursor))


def test_a_cursor_round_trips_any_key() -> None:
    for key in ["s0-image", "ü/ß 🙂", "a" * 64]:
        assert paging.decode_cursor(paging.encode_cursor(key)) == key
