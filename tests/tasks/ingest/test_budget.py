"""The decode budget: a decoder past its time or memory is stopped, its object quarantined,
the rest of the batch lands, and the watchdog's exception never escapes a decode."""

from __future__ import annotations

import io
import random
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.common import Limits, Models, Rejected, release_memory
from tasks.ingest import budget
from tasks.ingest.discover import discover
from tasks.ingest.extract import analyze_object, extract_batch, extract_plan
from tasks.media.encoders import DEFAULT_TEXT_MODEL

MB = 2**20


@pytest.fixture(autouse=True)
def _memory_returned() -> None:
    """Memory an earlier test freed goes back to the system first: the allocator keeps
    freed pages, and a decode that reuses them does not grow the process (the budget
    counts growth)."""
    release_memory()


def spin(seconds: float) -> str:
    """Python work that runs for ``seconds`` (a decoder's loop over frames, say)."""
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += 1
    return "done"


def grow(mb: int, step_s: float = 0.005, hold_s: float = 0.0) -> list[np.ndarray]:
    """Allocate ``mb`` MB in 4 MB blocks, touched so they are resident (a decoder filling
    frames), then hold them for ``hold_s``."""
    blocks = []
    for _ in range(mb // 4):
        blocks.append(np.ones(4 * MB, dtype=np.uint8))
        time.sleep(step_s)
    time.sleep(hold_s)
    return blocks


def test_a_decode_past_its_time_is_stopped_with_the_reason() -> None:
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        budget.within(0.1, 1024, lambda: spin(30))
    assert time.monotonic() - started < 2
    assert caught.value.stage == "decode"
    assert re.fullmatch(
        r"decode budget: stopped after 0\.\d+ s, over the 0\.1 s budget \(decode_seconds\)",
        caught.value.reason,
    )


def test_a_decoder_cannot_swallow_the_stop() -> None:
    def stubborn() -> str:
        for _ in range(100):
            try:
                spin(0.05)
            except Exception:  # a decoder's catch-all does not catch the watchdog's stop
                continue
        return "finished"

    with pytest.raises(Rejected, match="decode_seconds"):
        budget.within(0.1, 1024, stubborn)


def test_a_decode_within_budget_returns_its_result() -> None:
    assert budget.within(5, 1024, lambda: spin(0.05)) == "done"
    assert len(budget.within(5, 200, lambda: grow(40))) == 10


def test_a_decode_past_its_memory_is_stopped_with_the_reason() -> None:
    with pytest.raises(Rejected) as caught:
        budget.within(30, 64, lambda: grow(400))
    assert caught.value.stage == "decode"
    assert "over the 64 MB budget (decode_memory_mb)" in str(caught.value)


def test_shared_memory_names_the_culprit_and_spares_the_others() -> None:
    """Two decodes at once: the large one breaks their shared budget, both are stopped,
    each runs again alone, and only the large one is quarantined."""
    results: dict[str, object] = {}

    def run(name: str, decode: object) -> None:
        try:
            results[name] = len(budget.within(30, 100, decode))  # type: ignore[arg-type]
        except Rejected as rejection:
            results[name] = rejection

    small = threading.Thread(target=run, args=("small", lambda: grow(12, hold_s=1.0)))
    large = threading.Thread(target=run, args=("large", lambda: grow(400)))
    small.start()
    time.sleep(0.05)
    large.start()
    small.join(30)
    large.join(30)
    assert results["small"] == 3
    assert isinstance(results["large"], Rejected)
    assert "over the 100 MB budget (decode_memory_mb)" in results["large"].reason


def test_the_stop_never_lands_outside_a_decode() -> None:
    """Budgets that end as the decodes do: wherever the watchdog's stop falls, it is
    delivered inside the decode or cleared; none surfaces afterwards."""
    outcomes = {"done": 0, "stopped": 0}
    rng = random.Random(7)
    for _ in range(300):
        seconds = rng.uniform(0.001, 0.03)
        try:
            budget.within(0.01, 1024, lambda: spin(seconds))  # noqa: B023
            outcomes["done"] += 1
        except Rejected:
            outcomes["stopped"] += 1
    spin(0.3)  # a stray stop would be raised here
    assert sum(outcomes.values()) == 300
    assert outcomes["stopped"] > 0 and outcomes["done"] > 0


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_real_decode_over_budget_is_quarantined_and_the_batch_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    folder.mkdir()
    (folder / "big.png").write_bytes(png(7000, 7000))  # 147 MB of pixels to decode
    (folder / "small.png").write_bytes(png(64, 48))
    refs = discover(str(tmp_path), set(), Limits()).new
    assert len(refs) == 2
    result = extract_batch(
        "image", refs, Models(text=DEFAULT_TEXT_MODEL), Limits(decode_memory_mb=40), "run-1"
    )
    assert [Path(u).name for u in result.features["uri"]] == ["small.png"]
    assert [Path(u).name for u in result.quarantine["uri"]] == ["big.png"]
    assert result.quarantine["stage"].to_list() == ["decode"]
    assert "(decode_memory_mb)" in result.quarantine["reason"][0]


def test_a_video_past_its_time_is_quarantined_on_the_pipelines_threads(sample_dir: Path) -> None:
    refs = [r for r in discover(str(sample_dir), set(), Limits()).new if "/_bad/" not in r.uri]
    videos = [r for r in refs if r.modality == "video"][:2]
    images = [r for r in refs if r.modality == "image"][:2]
    limits = Limits(decode_seconds=0.001)
    assert isinstance(analyze_object(videos[0], limits).result, Rejected)
    results = extract_plan(
        [("video", videos), ("image", images)], Models(text=DEFAULT_TEXT_MODEL),
        Limits(decode_seconds=0.001), "run-1", threads=2,
    )  # fmt: skip
    by_modality = {r.modality: r for r in results}
    assert by_modality["video"].features.height == 0
    reasons = by_modality["video"].quarantine["reason"].to_list()
    assert len(reasons) == 2 and all("(decode_seconds)" in r for r in reasons)


def test_default_budgets_are_generous_for_real_media(sample_dir: Path) -> None:
    for ref in discover(str(sample_dir), set(), Limits()).new:
        result = analyze_object(ref, Limits()).result
        assert not (isinstance(result, Rejected) and "decode budget" in result.reason)
