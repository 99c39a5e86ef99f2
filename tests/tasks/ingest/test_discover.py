"""Discovery: modality from the bytes, one object per content, and a reason for every refusal."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tasks.common import Limits, Rejected
from tasks.ingest.discover import HEAD_BYTES, discover, sample_id_for, sniff_modality

GOOD = {
    "caption.txt": ("text", "text/plain"),
    "clip.mp4": ("video", "video/mp4"),
    "sensor.csv": ("timeseries", "text/csv"),
    "image.jpg": ("image", "image/jpeg"),
    "image.png": ("image", "image/png"),
    "audio.wav": ("audio", "audio/x-wav"),
    "audio.flac": ("audio", "audio/x-flac"),
}


def sniff(path: Path) -> tuple[str, str]:
    return sniff_modality(path.read_bytes()[:HEAD_BYTES], str(path))


def test_every_sample_file_sniffs_as_its_modality(sample_dir: Path) -> None:
    files = sorted(sample_dir.glob("sample-*/*"))
    assert len(files) == 15
    for path in files:
        assert sniff(path) == GOOD[path.name], path


@pytest.mark.parametrize(
    ("name", "modality"),
    [("bomb.png", "image"), ("truncated.jpg", "image"), ("nostreams.mp4", "video")],
)
def test_files_broken_inside_still_sniff_by_their_signature(
    sample_dir: Path, name: str, modality: str
) -> None:
    # Their headers are fine; they fail later, when decoded.
    assert sniff(sample_dir / "_bad" / name)[0] == modality


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("image.mp3", "mislabelled: extension .mp3 suggests audio but the bytes are image/png"),
        ("notes.jpg", "mislabelled: extension .jpg suggests image but the bytes are text/plain"),
        ("noise.wav", "unrecognised content"),
        ("latin1.txt", "unrecognised content"),
    ],
)
def test_bad_files_are_refused_at_sniff_with_a_reason(
    sample_dir: Path, name: str, phrase: str
) -> None:
    with pytest.raises(Rejected) as caught:
        sniff(sample_dir / "_bad" / name)
    assert caught.value.stage == "sniff"
    assert phrase in caught.value.reason


def test_extension_is_only_a_hint() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    assert sniff_modality(png, "upload.bin") == ("image", "image/png")
    assert sniff_modality(png, "no-extension") == ("image", "image/png")
    assert sniff_modality("héllo wörld\n".encode(), "README") == ("text", "text/plain")
    assert sniff_modality(b"# Title\n", "notes.md") == ("text", "text/markdown")
    # A CSV without a timestamp column is text, with one it is a sensor log.
    assert sniff_modality(b"a,b\n1,2\n", "table.csv") == ("text", "text/csv")
    assert sniff_modality(b"\xef\xbb\xbfTime,x\n0,1\n", "log.txt") == ("timeseries", "text/csv")


def test_utf8_character_cut_at_the_end_of_the_head_is_still_text() -> None:
    head = ("a" * 10 + "é").encode()[:-1]  # the head ends inside the two bytes of "é"
    assert sniff_modality(head, "notes.txt")[0] == "text"


def test_sample_id_is_the_parent_folder_else_the_stem() -> None:
    assert sample_id_for("/src/drive-7/front/clip.mp4", "/src") == "drive-7/front"
    assert sample_id_for("/src/photo.jpg", "/src") == "photo"


def test_discover_sorts_the_samples_into_new_and_rejected(sample_dir: Path) -> None:
    found = discover(str(sample_dir), set(), Limits())

    assert len(found.new) == 18  # 15 sample files + 3 that fail only at decode
    assert {ref.sample_id for ref in found.new} == {
        "sample-0000",
        "sample-0001",
        "sample-0002",
        "_bad",
    }
    for ref in found.new:
        path = Path(ref.uri)
        assert ref.object_id == hashlib.sha256(path.read_bytes()).hexdigest()
        assert ref.size == path.stat().st_size
        assert ref.sample_id == path.parent.name
    rejected = {Path(r["uri"]).name: (r["stage"], r["reason"]) for r in found.rejected}
    assert set(rejected) == {"empty.dat", "image.mp3", "notes.jpg", "noise.wav", "latin1.txt"}
    assert rejected["empty.dat"] == ("discover", "empty object (0 bytes)")
    assert rejected["image.mp3"][0] == "sniff"
    assert "mislabelled" in rejected["image.mp3"][1]
    assert (found.known, found.duplicates) == (0, 0)


def test_known_objects_are_skipped_and_counted(sample_dir: Path) -> None:
    first = discover(str(sample_dir), set(), Limits())
    known = {ref.object_id for ref in first.new[:5]} | {r["object_id"] for r in first.rejected}

    again = discover(str(sample_dir), known, Limits())

    assert again.known == 5 + len(first.rejected)
    assert again.rejected == []
    assert [ref.object_id for ref in again.new] == [ref.object_id for ref in first.new[5:]]


def test_identical_bytes_under_two_names_are_one_object(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "note.txt").write_text("the same words\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.txt").write_text("the same words\n")
    (tmp_path / "b" / "other.txt").write_text("other words\n")

    found = discover(str(tmp_path), set(), Limits())

    assert [Path(ref.uri).name for ref in found.new] == ["note.txt", "other.txt"]
    assert found.duplicates == 1


def test_hidden_and_partial_files_are_not_objects(tmp_path: Path) -> None:
    for name in ("kept.txt", ".x", "upload.part", "write.tmp", "video.MP4.PART"):
        (tmp_path / name).write_text(f"content of {name}\n")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "inside.txt").write_text("hidden folder\n")

    found = discover(str(tmp_path), set(), Limits())

    assert [Path(ref.uri).name for ref in found.new] == ["kept.txt"]
    assert found.rejected == []
    assert found.known == found.duplicates == 0


def test_object_over_the_size_limit_is_rejected_without_being_read(
    sample_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(sample_dir / "sample-0000" / "caption.txt", tmp_path / "small.txt")
    (tmp_path / "big.txt").write_text("x" * 1000)

    found = discover(str(tmp_path), set(), Limits(max_object_bytes=500))

    assert [Path(ref.uri).name for ref in found.new] == ["small.txt"]
    (big,) = found.rejected
    assert Path(big["uri"]).name == "big.txt"
    assert big["stage"] == "discover"
    assert "1000 bytes, over the limit of 500" in big["reason"]
    assert big["size_bytes"] == 1000
    assert big["modality"] == "text"  # the extension's hint, the bytes were never read
    # Its id is stable, so a re-run skips it rather than rejecting it again.
    again = discover(str(tmp_path), {big["object_id"]}, Limits(max_object_bytes=500))
    assert (again.known, again.rejected) == (1, [])


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(str(tmp_path / "nowhere"), set(), Limits())
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        discover(str(tmp_path / "file.txt"), set(), Limits())
