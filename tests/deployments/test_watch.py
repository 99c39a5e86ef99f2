"""The folder watcher: once per settled version, never for partial or hidden names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments.events import ObjectCreated, validate_key
from deployments.watch import FolderWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watcher(tmp_path: Path) -> tuple[FolderWatcher, list[ObjectCreated], Clock]:
    emitted: list[ObjectCreated] = []
    clock = Clock()
    return FolderWatcher(tmp_path, emitted.append, settle=2.0, clock=clock), emitted, clock


def scan_at(watcher: FolderWatcher, clock: Clock, t: float) -> list[str]:
    clock.now = t
    return [o.key for o in watcher.scan()]


def test_a_file_is_emitted_once_after_it_settles(tmp_path, watcher) -> None:
    w, emitted, clock = watcher
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "photo.jpg").write_bytes(b"x" * 10)
    assert scan_at(w, clock, 0) == []  # first seen
    assert scan_at(w, clock, 1) == []  # not settled yet
    assert scan_at(w, clock, 2.5) == ["s1/photo.jpg"]
    assert scan_at(w, clock, 10) == []  # once per version
    (event,) = emitted
    assert event.source == str(tmp_path.resolve())
    assert event.folder == str(tmp_path.resolve())
    assert event.size == 10
    assert event.uri == str(tmp_path.resolve() / "s1" / "photo.jpg")
    assert event.payload()["key"] == "s1/photo.jpg"


def test_a_growing_file_waits_until_it_stops_changing(tmp_path, watcher) -> None:
    w, _, clock = watcher
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"a")
    assert scan_at(w, clock, 0) == []
    path.write_bytes(b"ab")
    os.utime(path, ns=(1, 1_000_000_000))
    assert scan_at(w, clock, 3) == []  # changed since last scan: the settle time restarts
    assert scan_at(w, clock, 4) == []
    assert scan_at(w, clock, 5.5) == ["clip.mp4"]


def test_partial_and_hidden_names_are_ignored_until_renamed(tmp_path, watcher) -> None:
    w, _, clock = watcher
    (tmp_path / "audio.wav.part").write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "upload.tmp").write_bytes(b"x")
    scan_at(w, clock, 0)
    assert scan_at(w, clock, 5) == []
    os.replace(tmp_path / "audio.wav.part", tmp_path / "audio.wav")
    scan_at(w, clock, 6)
    assert scan_at(w, clock, 9) == ["audio.wav"]


def test_a_new_version_is_emitted_again(tmp_path, watcher) -> None:
    w, emitted, clock = watcher
    path = tmp_path / "caption.txt"
    path.write_text("a cat")
    scan_at(w, clock, 0)
    assert scan_at(w, clock, 3) == ["caption.txt"]
    path.write_text("a dog on a mat")
    scan_at(w, clock, 4)
    assert scan_at(w, clock, 7) == ["caption.txt"]
    assert emitted[0].etag != emitted[1].etag


def test_an_emit_failure_is_retried_on_the_next_scan(tmp_path) -> None:
    calls: list[str] = []

    def flaky(obj: ObjectCreated) -> None:
        calls.append(obj.key)
        if len(calls) == 1:
            raise ConnectionError("API down")

    clock = Clock()
    w = FolderWatcher(tmp_path, flaky, settle=1.0, clock=clock)
    (tmp_path / "a.txt").write_text("hello")
    scan_at(w, clock, 0)
    assert scan_at(w, clock, 2) == []
    assert scan_at(w, clock, 3) == ["a.txt"]
    assert calls == ["a.txt", "a.txt"]


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "", "a//b", "a/./b", "a\\b"])
def test_keys_that_could_escape_the_source_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


def test_plain_relative_keys_pass() -> None:
    assert validate_key("sample-0001/photo 1.jpg") == "sample-0001/photo 1.jpg"


def test_a_name_that_is_not_utf8_is_emitted_with_its_bytes_shown(tmp_path, watcher) -> None:
    """It could not travel in an event at all (UnicodeEncodeError on every scan)."""
    from deployments.events import object_created_event

    w, emitted, clock = watcher
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"a caption\n")
    scan_at(w, clock, 0)
    assert scan_at(w, clock, 3) == ["caf%E9.txt"]
    object_created_event(emitted[0]).model_dump_json()  # encodable, as the API needs
