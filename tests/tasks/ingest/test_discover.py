"""Discovery: modality from the bytes, one object per content, and a reason for every refusal."""

from __future__ import annotations

import codecs
import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from tasks.common import Limits, Rejected
from tasks.ingest.discover import HEAD_BYTES, discover, sample_id_for, sniff_modality
from tasks.lake.storage import local_path, open_binary, read_bytes

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


def _reasons(found) -> dict[str, str]:
    return {Path(local_path(r["uri"])).name: r["reason"] for r in found.rejected}


def test_only_regular_files_inside_the_source_are_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours to read\n")
    source = tmp_path / "source"
    (source / "a").mkdir(parents=True)
    (source / "a" / "real.txt").write_text("a caption inside the source\n")
    (source / "a" / "inside.txt").symlink_to(source / "a" / "real.txt")
    (source / "a" / "passwd.txt").symlink_to(outside / "secret.txt")
    (source / "a" / "escape.txt").symlink_to("../../outside/secret.txt")
    (source / "a" / "zero.txt").symlink_to("/dev/zero")
    (source / "a" / "gone.txt").symlink_to(source / "a" / "missing.txt")
    (source / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(source / "a" / "pipe.txt")

    # A FIFO would block a reader forever and /dev/zero never ends: refused when listed.
    found = discover(str(source), set(), Limits())

    assert [Path(ref.uri).name for ref in found.members] == ["inside.txt", "real.txt"]
    assert found.duplicates == 1  # the link inside the source is the same bytes
    reasons = _reasons(found)
    assert reasons == {
        "passwd.txt": "a symbolic link to a path outside the source",
        "escape.txt": "a symbolic link to a path outside the source",
        "zero.txt": "a symbolic link to a path outside the source",
        "gone.txt": "unreadable: No such file or directory",
        "linked": "a symbolic link to a folder: not followed",
        "pipe.txt": "not a regular file: a FIFO (named pipe)",
    }
    assert all(r["stage"] == "discover" for r in found.rejected)
    assert "not yours" not in repr(found)
    # Refusals keep stable ids: a re-run counts them as known instead of filing them again.
    again = discover(str(source), {r["object_id"] for r in found.rejected}, Limits())
    assert again.rejected == [] and again.known == len(reasons)


def test_a_fifo_swapped_in_after_listing_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file: a FIFO"):
        open_binary(str(tmp_path / "pipe"))


def test_names_that_are_not_utf8_get_byte_safe_uris(tmp_path: Path) -> None:
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(folder)
    with open(os.path.join(folder, b"caption \xff.txt"), "wb") as handle:
        handle.write(b"a caption under a Latin-1 name\n")
    (tmp_path / "plain.txt").write_text("a plain name\n")

    found = discover(str(tmp_path), set(), Limits())

    plain, latin = sorted(found.new, key=lambda ref: ref.uri)
    assert plain.uri == str(tmp_path / "plain.txt")  # valid names stay plain paths
    assert latin.uri == "file://" + quote(os.fsencode(tmp_path)) + "/caf%E9/caption%20%FF.txt"
    latin.uri.encode("utf-8")  # any Parquet column, log line or JSON can carry it
    assert latin.sample_id == "caf\\xe9"
    assert read_bytes(latin.uri) == b"a caption under a Latin-1 name\n"
    assert local_path(latin.uri) == os.fsdecode(os.path.join(folder, b"caption \xff.txt"))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_text(encoding: str) -> None:
    from tasks.media import text, timeseries

    def encode(words: str) -> bytes:  # Python writes no mark for an explicit byte order
        mark = codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b""
        return mark + words.encode(encoding)

    caption = "Un café au bord de l'eau\n"
    data = encode(caption)
    assert sniff_modality(data[:HEAD_BYTES], "note.txt") == ("text", "text/plain")
    assert sniff_modality(data[:7], "note.txt")[0] == "text"  # a character cut by the head
    assert text.decode(data, Limits()) == caption
    log = "timestamp,speed\n2024-01-01T00:00:00Z,1.5\n2024-01-01T00:00:01Z,2.5\n"
    log = encode(log)
    assert sniff_modality(log, "log.csv") == ("timeseries", "text/csv")
    times, channels = timeseries.decode(log, Limits())
    assert times.len() == 2
    assert channels["speed"].to_list() == [1.5, 2.5]


def test_utf16_without_a_mark_is_still_refused() -> None:
    with pytest.raises(Rejected, match="not UTF-8"):
        sniff_modality("plain words".encode("utf-16-le"), "note.txt")
