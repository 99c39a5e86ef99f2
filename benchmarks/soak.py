"""`make soak`: one `braid run` over thousands of hostile files, and what held.

A seeded generator writes ``--files`` mutants of every supported format (bit flips,
truncations, random bytes behind a valid magic number, swapped headers, zero-length
files, huge declared sizes, inserted, repeated and zeroed ranges, garbage tails, wrong
extensions, and for text and sensor logs non-finite numbers, absurd timestamps, NULs and
broken UTF-8), from seed files of each format (``braid samples`` plus conversions), and
the hand-made hostile cases (links out of the source and to ``/dev/zero``, a FIFO, a
name that is not UTF-8, UTF-16 text, a decompression-bomb PNG, WAV headers claiming
4 GB and 65535 channels, an over-long text, CSVs of ``1e308`` values, of year-24
timestamps and of a million columns, a two-hour MP4). One `braid run` then ingests them
all, and the summary says:

- crashes: the run did not finish with exit code 0, or printed a traceback;
- hangs: the run outlived its time limit and was killed;
- accounted: the objects the lake records (landed + quarantined) over the distinct
  contents of the source (plus each refused link or special file), 100 % when none is lost;
- non-finite: NaN or infinite values in any landed float column (lists included);
- peak RSS of the run's whole process tree.

Targets: 0, 0, 100 %, 0, <= 2 GiB. ``make soak`` runs 10,000 files; the test suite 500.

    python -m benchmarks.soak [--files 10000] [--seed 0] [--work DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"crashes": 0, "hangs": 0, "accounted_pct": 100.0, "non_finite": 0, "peak_rss_gib": 2.0}
Mutator = Callable[[np.random.Generator, bytes, list[bytes]], bytes]


# Seeds: one or more files of every supported format ---------------------------------


def seed_files(work: Path, seed: int) -> dict[str, list[bytes]]:
    """Seed files by extension: `braid samples`' own, plus each image, audio, video and
    text format made from them."""
    import av
    import soundfile
    from PIL import Image

    from tasks.samples import make_samples

    folder = work / "seeds"
    written = [p for p in make_samples(folder, n=6, seed=seed) if "_bad" not in p.parts]
    by_ext: dict[str, list[bytes]] = {}
    for path in written:
        by_ext.setdefault(path.suffix.lower(), []).append(path.read_bytes())
    for path in [p for p in written if p.suffix in (".jpg", ".png")][:3]:
        image = Image.open(path).convert("RGB")
        for fmt, ext in (("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif"), ("BMP", ".bmp"),
                         ("TIFF", ".tif"), ("JPEG", ".jpg")):  # fmt: skip
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            by_ext.setdefault(ext, []).append(buffer.getvalue())
    for path in [p for p in written if p.suffix in (".wav", ".flac")][:3]:
        samples, rate = soundfile.read(path)
        for fmt, ext in (("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")):
            buffer = io.BytesIO()
            soundfile.write(buffer, samples, rate, format=fmt)
            by_ext.setdefault(ext, []).append(buffer.getvalue())
    for path in [p for p in written if p.suffix == ".mp4"][:3]:
        by_ext.setdefault(".mkv", []).append(_remux(av, path.read_bytes(), "matroska"))
    captions = [b.decode() for b in by_ext.get(".txt", [])]
    by_ext[".json"] = [json.dumps({"caption": c}).encode() for c in captions]
    by_ext[".srt"] = [f"1\n00:00:00,000 --> 00:00:02,000\n{c}\n".encode() for c in captions]
    by_ext[".md"] = [f"# Caption\n\n{c}".encode() for c in captions]
    return by_ext


def _remux(av: Any, data: bytes, fmt: str) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(out, "w", format=fmt) as target:
        streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            target.mux(packet)
    return out.getvalue()


# Mutations --------------------------------------------------------------------------


def _bit_flips(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 65))):
        at = int(rng.integers(len(out)))
        out[at] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _header_flips(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        at = int(rng.integers(min(64, len(out))))
        out[at] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _truncate(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    return data[: int(rng.integers(1, max(2, len(data))))]


def _magic_then_noise(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    return data[:16] + rng.bytes(int(rng.integers(16, 8192)))


def _header_swap(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    other = others[int(rng.integers(len(others)))]
    cut = int(rng.integers(16, 513))
    return other[:cut] + data[cut:]


def _zero_length(*_: Any) -> bytes:
    return b""


def _huge_size(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    out = bytearray(data)
    at = int(rng.integers(4, max(5, min(120, len(out) - 4))))
    value = (0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0x10000000)[int(rng.integers(4))]
    out[at : at + 4] = struct.pack("<I" if rng.random() < 0.5 else ">I", value)
    return bytes(out)


def _insert(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    at = int(rng.integers(len(data)))
    return data[:at] + rng.bytes(int(rng.integers(1, 4096))) + data[at:]


def _repeat(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    start = int(rng.integers(len(data)))
    end = min(len(data), start + int(rng.integers(1, 8192)))
    return data[:end] + data[start:end] * int(rng.integers(2, 8)) + data[end:]


def _zero_range(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    start = int(rng.integers(len(data)))
    end = min(len(data), start + int(rng.integers(1, 4096)))
    return data[:start] + bytes(end - start) + data[end:]


def _garbage_tail(rng: np.random.Generator, data: bytes, _: list[bytes]) -> bytes:
    return data + rng.bytes(int(rng.integers(1, 65536)))


BINARY_MUTATORS: list[Mutator] = [
    _bit_flips, _header_flips, _truncate, _magic_then_noise, _header_swap, _zero_length,
    _huge_size, _insert, _repeat, _zero_range, _garbage_tail,
]  # fmt: skip


def _text_mutant(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    """Text and CSV: the binary mutations, or values and encodings that break parsers."""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines() or [""]
    choice = int(rng.integers(8))
    if choice == 0:  # non-finite and absurd numbers in a random cell
        bad = ["1e308", "-1e308", "nan", "inf", "-inf", "1e400", "9" * 400, "0x1p1024"]
        at = int(rng.integers(len(lines)))
        cells = lines[at].split(",")
        cells[int(rng.integers(len(cells)))] = bad[int(rng.integers(len(bad)))]
        lines[at] = ",".join(cells)
    elif choice == 1:  # absurd timestamps
        at = int(rng.integers(1, max(2, len(lines))))
        stamps = ["0024-01-01T00:00:00", "9999-12-31T23:59:59", "-1e18", "1e300", "nan"]
        if at < len(lines):
            cells = lines[at].split(",")
            cells[0] = stamps[int(rng.integers(len(stamps)))]
            lines[at] = ",".join(cells)
    elif choice == 2:  # a NUL, or bytes that are not UTF-8
        blob = "\n".join(lines).encode()
        at = int(rng.integers(len(blob) + 1))
        return blob[:at] + (b"\x00" if rng.random() < 0.5 else b"\xff\xfe\xc3") + blob[at:]
    elif choice == 3:  # a very long line
        lines.append("x," * int(rng.integers(1000, 50000)))
    elif choice == 4:  # ragged rows
        lines = [line + ",1" * int(rng.integers(0, 3)) for line in lines]
    else:
        return BINARY_MUTATORS[int(rng.integers(len(BINARY_MUTATORS)))](rng, data, others)
    return "\n".join(lines).encode()


WRONG_EXTENSIONS = [".jpg", ".png", ".wav", ".mp3", ".mp4", ".txt", ".csv", ".bin", ""]


def write_mutants(source: Path, seeds: dict[str, list[bytes]], files: int, seed: int) -> int:
    """``files`` mutants, five to a sample folder, seeded; returns how many were written."""
    rng = np.random.default_rng([seed, 0x50AC])
    extensions = sorted(seeds)
    everything = [data for ext in extensions for data in seeds[ext]]
    for index in range(files):
        ext = extensions[index % len(extensions)]
        data = seeds[ext][int(rng.integers(len(seeds[ext])))]
        if ext in (".txt", ".csv", ".json", ".srt", ".md"):
            mutant = _text_mutant(rng, data, everything)
        else:
            mutant = BINARY_MUTATORS[int(rng.integers(len(BINARY_MUTATORS)))](rng, data, everything)
        name_ext = ext if rng.random() > 0.1 else WRONG_EXTENSIONS[int(rng.integers(9))]
        folder = source / f"sample-{index // 5:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"m{index:05d}{name_ext}").write_bytes(mutant)
    return files


# Hand-made hostile cases ------------------------------------------------------------


def write_hostile(source: Path, seeds: dict[str, list[bytes]]) -> list[str]:
    """The hand-made cases, in ``source/hostile``; returns their names."""
    from tasks.samples import decompression_bomb_png

    folder = source / "hostile"
    folder.mkdir(parents=True, exist_ok=True)
    wav = seeds[".wav"][0]
    contents = {
        "bomb.png": decompression_bomb_png(),
        "wav-4gb.wav": _wav_with(wav, data_size=0xFFFFFFF0),
        "wav-65535-channels.wav": _wav_with(wav, channels=65535),
        "utf16.txt": "Notes from a Windows tool, in UTF-16 with a BOM.\n".encode("utf-16"),
        "long.txt": b"word " * 400_000,  # 2,000,000 characters
        "inf.csv": b"timestamp,x,y\n" + b"".join(b"%d,1e308,1e308\n" % i for i in range(50)),
        "year24.csv": b"timestamp,x\n0024-01-01T00:00:00,1\n0024-01-01T00:00:01,2\n",
        "wide.csv": b"timestamp," + b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n",
        "two-hours.mp4": _long_mp4(7200),
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    links = {
        "passwd.txt": "/etc/passwd",
        "zero.wav": "/dev/zero",
        "inside.jpg": str(folder / "bomb.png"),
        "folder-link": "/etc",
    }
    for name, target in links.items():
        with contextlib.suppress(FileExistsError):
            os.symlink(target, folder / name)
    with contextlib.suppress(FileExistsError):
        os.mkfifo(folder / "pipe.csv")
    latin1 = os.fsencode(folder) + b"/caf\xe9-notes.txt"
    with open(latin1, "wb") as handle:
        handle.write(b"Notes in a folder whose name is Latin-1.\n")
    return [*contents, *links, "pipe.csv", "caf\\xe9-notes.txt"]


def _wav_with(wav: bytes, data_size: int | None = None, channels: int | None = None) -> bytes:
    out = bytearray(wav)
    if channels is not None:
        out[22:24] = struct.pack("<H", channels)
    if data_size is not None:
        at = out.find(b"data")
        out[at + 4 : at + 8] = struct.pack("<I", data_size)
        out[4:8] = struct.pack("<I", min(0xFFFFFFFF, data_size + 36))
    return bytes(out)


def _long_mp4(seconds: int) -> bytes:
    """A tiny MP4 whose frames are a minute apart: ``seconds`` long in its header."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.time_base = __import__("fractions").Fraction(1, 1)
        for index in range(seconds // 60 + 1):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = index * 60
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


# Accounting -------------------------------------------------------------------------


def expected_objects(source: Path) -> tuple[set[str], int]:
    """The distinct contents a lossless run must account for (SHA-256 of each readable
    regular file, links inside the source followed), and how many entries it must refuse
    (links out, special files, links to folders)."""
    root = os.path.realpath(source)
    contents: set[str] = set()
    refused = 0
    for folder, dirs, names in os.walk(os.fsencode(source)):
        entries = [*names, *[d for d in dirs if os.path.islink(os.path.join(folder, d))]]
        for name in entries:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            inside = os.fsdecode(real).startswith(root + os.sep)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                refused += 1
                continue
            if not inside or not stat.S_ISREG(mode):
                refused += 1
                continue
            with open(path, "rb") as handle:
                contents.add(hashlib.file_digest(handle, "sha256").hexdigest())
    return contents, refused


def lake_report(lake: Path) -> dict[str, Any]:
    """What the lake records: object ids by status, quarantine reasons, non-finite values."""
    import duckdb

    with duckdb.connect(str(lake / "braid.duckdb"), read_only=True) as con:
        objects = con.execute("select object_id, status from objects").fetchall()
        reasons = con.execute(
            "select stage, regexp_replace(reason, '[0-9]+', 'N', 'g') as reason, count(*) "
            "from quarantine group by all order by 3 desc"
        ).fetchall()
        non_finite: dict[str, int] = {}
        views = [
            r[0]
            for r in con.execute(
                "select view_name from duckdb_views() where not internal"
            ).fetchall()
        ]
        for view in views:
            for name, kind, *_ in con.execute(f'describe "{view}"').fetchall():
                check = _non_finite_check(f'"{name}"', kind)
                if check:
                    count = con.execute(f'select count(*) from "{view}" where {check}').fetchone()
                    if count and count[0]:
                        non_finite[f"{view}.{name}"] = int(count[0])
    return {"objects": objects, "reasons": reasons, "non_finite": non_finite}


def _non_finite_check(column: str, kind: str) -> str | None:
    base = kind.split("[")[0]
    if base not in ("FLOAT", "DOUBLE"):
        return None
    if "[" in kind:
        return f"len(list_filter({column}::DOUBLE[], lambda x: not isfinite(x))) > 0"
    return f"not isfinite({column})"


# The run ----------------------------------------------------------------------------


def soak(work: Path, files: int, seed: int = 0, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Write the corpus, run `braid run` over it once, and summarise (see the docstring)."""
    from benchmarks.measure import clean_env, run_process

    source, lake = work / "source", work / "lake"
    seeds = seed_files(work, seed)
    write_mutants(source, seeds, files, seed)
    hostile = write_hostile(source, seeds)
    contents, refused = expected_objects(source)
    env = clean_env(work / "prefect", PYTHONPATH=str(ROOT))
    braid = Path(sys.executable).parent / "braid"  # the console script of this environment
    run = run_process(
        [str(braid), "run", str(source), "--lake", str(lake)],
        env=env, timeout=timeout_s,
    )  # fmt: skip
    hang = run.wall_s >= timeout_s
    crashed = not hang and (run.returncode != 0 or "Traceback" in run.output)
    recorded = lake_report(lake) if (lake / "braid.duckdb").exists() else None
    statuses = Counter(status for _, status in recorded["objects"]) if recorded else Counter()
    ids = {object_id for object_id, _ in recorded["objects"]} if recorded else set()
    expected = len(contents) + refused
    accounted = len(contents & ids) + min(refused, len(ids - contents))
    summary = {
        "files_written": files + len(hostile),
        "mutants": files,
        "hostile_cases": len(hostile),
        "distinct_contents": len(contents),
        "refused_entries": refused,
        "landed": statuses.get("landed", 0),
        "quarantined": statuses.get("quarantined", 0),
        "crashes": int(crashed),
        "hangs": int(hang),
        "accounted_pct": round(100.0 * accounted / expected, 3) if expected else 100.0,
        "missing": sorted(contents - ids)[:10],
        "non_finite": sum((recorded or {}).get("non_finite", {}).values()),
        "non_finite_columns": (recorded or {}).get("non_finite", {}),
        "decode_budget_stops": sum(
            n for _, reason, n in (recorded or {}).get("reasons", []) if "decode budget" in reason
        ),
        "peak_rss_gib": round(run.peak_tree_rss_mb / 1024, 3),
        "processes_at_peak": run.processes_at_peak,
        "wall_s": round(run.wall_s, 1),
        "cpu_s": round(run.cpu_s, 1),
        "reasons": [list(r) for r in (recorded or {}).get("reasons", [])],
        "returncode": run.returncode,
    }
    if crashed or hang:
        summary["output_tail"] = run.output[-3000:]
    summary["met"] = met(summary)
    return summary


def met(summary: dict[str, Any]) -> dict[str, bool]:
    return {
        "crashes": summary["crashes"] <= TARGETS["crashes"],
        "hangs": summary["hangs"] <= TARGETS["hangs"],
        "accounted_pct": summary["accounted_pct"] >= TARGETS["accounted_pct"],
        "non_finite": summary["non_finite"] <= TARGETS["non_finite"],
        "peak_rss_gib": summary["peak_rss_gib"] <= TARGETS["peak_rss_gib"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--files", type=int, default=10_000, help="mutants to write (default 10000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, help="scratch folder (default: a new temporary one, removed)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before the run counts as hung"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="braid-soak-"))
    try:
        summary = soak(work, args.files, args.seed, args.timeout)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print(
        "targets: "
        + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in summary["met"].items())
    )
    return 0 if all(summary["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
