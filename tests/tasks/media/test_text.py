"""Text: strict UTF-8, counts a reader would check, subtitles without their timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.common import Limits, Rejected
from tasks.media import text

SRT = """1
00:00:01,000 --> 00:00:03,500
Where are you going?

2
00:00:04,000 --> 00:00:06,000
To the sea, before the rain.
"""

VTT = """WEBVTT

00:01.000 --> 00:03.500 align:start
Where are you going?

00:04.000 --> 00:06.000
To the sea, before the rain.
"""


def test_counts_of_a_short_text() -> None:
    analysis = text.analyze("Two lines here.\nAnd a café.".encode(), Limits())

    assert analysis.features == {
        "chars": 27,
        "words": 6,
        "lines": 2,
        "preview": "Two lines here. And a café.",
    }
    assert analysis.model_input == "Two lines here.\nAnd a café."


def test_preview_is_one_line_of_at_most_200_characters() -> None:
    long = ("word " * 100 + "\n") * 3
    preview = text.analyze(long.encode(), Limits()).features["preview"]
    assert len(preview) == text.PREVIEW_CHARS
    assert "\n" not in preview
    assert "  " not in preview


@pytest.mark.parametrize(
    ("content", "lines"),
    [("one", 1), ("one\n", 1), ("one\ntwo", 2), ("one\r\ntwo\r\n", 2), ("one\n\nthree\n", 3)],
)
def test_lines_count_like_a_reader_counts_them(content: str, lines: int) -> None:
    assert text.analyze(content.encode(), Limits()).features["lines"] == lines


def test_byte_order_mark_is_dropped() -> None:
    decoded = text.decode(b"\xef\xbb\xbfhello", Limits())
    assert decoded == "hello"
    assert text.features(decoded)["chars"] == 5


@pytest.mark.parametrize(
    ("subtitles", "media_type"), [(SRT, "application/x-subrip"), (VTT, "text/vtt")]
)
def test_subtitles_lose_cue_numbers_and_timings(subtitles: str, media_type: str) -> None:
    decoded = text.decode(subtitles.encode(), Limits(), media_type)

    assert " ".join(decoded.split()) == "Where are you going? To the sea, before the rain."
    assert "-->" not in decoded
    assert text.features(decoded)["words"] == 10


def test_plain_text_keeps_lines_that_look_like_timings() -> None:
    plain = "Meeting at\n10:00 --> 11:00\n2\n"
    assert text.decode(plain.encode(), Limits(), "text/plain") == plain


def test_invalid_utf8_is_rejected_with_the_offset(sample_dir: Path) -> None:
    with pytest.raises(Rejected) as caught:
        text.decode(b"caf\xe9 au lait", Limits())
    assert caught.value.stage == "decode"
    assert caught.value.reason == "not valid UTF-8 text: byte 0xe9 at offset 3"

    latin1 = (sample_dir / "_bad" / "latin1.txt").read_bytes()
    with pytest.raises(Rejected, match=r"byte 0xe8 at offset 2"):
        text.analyze(latin1, Limits())


@pytest.mark.parametrize("blank", [b"", b"   \n\t\r\n  ", b"\xef\xbb\xbf\n \n"])
def test_whitespace_only_is_rejected(blank: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        text.decode(blank, Limits())
    assert caught.value.stage == "decode"
    assert "only whitespace" in caught.value.reason


def test_subtitles_with_no_dialogue_are_rejected() -> None:
    with pytest.raises(Rejected, match="only whitespace"):
        text.decode(b"1\n00:00:01,000 --> 00:00:02,000\n\n", Limits(), "application/x-subrip")


def test_text_over_the_character_limit_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        text.decode(("é" * 11).encode(), Limits(max_text_chars=10))
    assert caught.value.reason == "text has 11 characters, over the limit of 10"
    # Characters, not bytes: ten two-byte characters fit.
    assert text.decode(("é" * 10).encode(), Limits(max_text_chars=10)) == "é" * 10


def test_sample_captions(sample_dir: Path) -> None:
    for path in sorted(sample_dir.glob("sample-*/caption.txt")):
        caption = path.read_text(encoding="utf-8")
        row = text.analyze(path.read_bytes(), Limits()).features
        assert row["chars"] == len(caption)
        assert row["words"] == len(caption.split())
        assert row["lines"] == 1  # one line and its newline
        assert row["preview"].startswith("A ")
