"""The HTML report: one self-contained file, every plot titled and inline, and it renders."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.serve import report

CHROMIUM = Path("/usr/bin/chromium")
# Anything a browser would fetch: src/href/url() pointing at a network (or protocol-relative) address.
REMOTE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)


def inline_pngs(page: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


@pytest.fixture(scope="module")
def page(tiny_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = report.build_report(tiny_lake, tmp_path_factory.mktemp("report") / "sub" / "lake.html")
    return out, out.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file_with_every_plot_titled(page) -> None:
    out, html = page
    assert out.name == "lake.html" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["lake.html"]  # no side files, no temporaries
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert REMOTE.search(html) is None
    assert "<script" not in html and "<link" not in html
    for title in report.TITLES:
        assert f"<h2>{title}</h2>" in html, title
        assert f'alt="{title}"' in html, title
    images = inline_pngs(html)
    assert len(images) == len(report.TITLES)
    for image in images:
        pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # drawn, not blank


def test_report_summarises_the_lake(page) -> None:
    _, html = page
    summary = html[html.index("<h2>Summary</h2>") : html.index("<h2>Last runs</h2>")]
    cells = re.findall(r'<td class="n">(\d+)</td>', summary)
    assert cells == ["9", "8", "1", "5", "4"]  # objects, landed, quarantined, samples, fused
    runs = html[html.index("<h2>Last runs</h2>") :]
    assert runs.index("run-2") < runs.index("run-1")
    reasons = html[html.index(f"<h2>{report.QUARANTINE_REASONS}</h2>") :]
    assert "<td>sniff</td><td>Unrecognised content</td>" in reasons


def test_costs_are_skipped_without_a_costs_table(tiny, tmp_path: Path) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    html = report.build_report(lake, tmp_path / "r.html").read_text()
    assert f"<h2>{report.COST_PER_STAGE}</h2>" not in html
    assert "No cost records in this lake" in html
    assert len(inline_pngs(html)) == len(report.TITLES) - 1


def test_an_empty_lake_gets_notes_instead_of_plots(tmp_path: Path) -> None:
    (tmp_path / "lake" / "objects").mkdir(parents=True)
    html = report.build_report(tmp_path / "lake", tmp_path / "r.html").read_text()
    assert inline_pngs(html) == []
    for note in ("No objects yet.", "No image features yet.", "Needs at least two fused samples."):
        assert note in html
    with pytest.raises(FileNotFoundError, match="no lake at"):
        report.build_report(tmp_path / "nowhere", tmp_path / "r.html")


def test_projection_keeps_the_main_axes() -> None:
    rng = np.random.default_rng(0)
    along = rng.normal(size=(50, 1)) * np.array([[3.0, 0, 0, 0]])
    points, share = report.project_2d(along + rng.normal(scale=0.01, size=(50, 4)))
    assert share[0] > 0.99 and abs(np.corrcoef(points[:, 0], along[:, 0])[0, 1]) > 0.999
    single, share = report.project_2d(np.ones((1, 3)))
    assert single.shape == (1, 2) and share.tolist() == [0.0, 0.0]


def test_reason_kind_groups_reasons_that_differ_in_particulars() -> None:
    assert (
        report.reason_kind("corrupt or truncated image: 41 bytes") == "corrupt or truncated image"
    )
    assert report.reason_kind("image claims 100x200 pixels") == "image claims NxN pixels"
    assert report.reason_kind(None) == "no reason"


@pytest.mark.integration
def test_report_renders_in_a_headless_browser(page, tmp_path: Path) -> None:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("no chromium at /usr/bin/chromium: `apt-get install -y chromium` to run it")
    out, _ = page
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            str(CHROMIUM) if CHROMIUM.exists() else "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            out.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text and plots, not a blank or single-colour page
    # The plots drew: the modality colours of the first plot's bars are on screen.
    image_blue = np.array([31, 119, 180])
    assert (np.abs(pixels.astype(int) - image_blue).sum(axis=2) < 30).sum() > 500
