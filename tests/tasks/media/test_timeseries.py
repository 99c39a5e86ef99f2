"""Sensor logs: span, rate and channels of a CSV with a timestamp column, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.common import Limits, Rejected
from tasks.media import timeseries


def log(rows: int = 21, rate_hz: float = 10.0, column: str = "timestamp") -> bytes:
    """A log at a steady rate from 2024-01-01, with a 1 Hz sine and a constant channel."""
    lines = [f"{column},x,level"]
    for index in range(rows):
        seconds = index / rate_hz
        stamp = datetime.fromtimestamp(1_704_067_200 + seconds, UTC)
        x = np.sin(2 * np.pi * seconds)
        lines.append(f"{stamp.isoformat(timespec='milliseconds')},{x:.6f},5")
    return ("\n".join(lines) + "\n").encode()


def test_rows_duration_rate_and_channels() -> None:
    analysis = timeseries.analyze(log(rows=21, rate_hz=10.0), Limits())

    row = analysis.features
    assert row["rows"] == 21
    assert row["channels"] == ["x", "level"]
    assert row["start_time"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert row["end_time"] == datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert row["duration_s"] == pytest.approx(2.0)
    assert row["sample_rate_hz"] == pytest.approx(10.0)
    assert row["channel_mean"] == pytest.approx([0.0, 5.0], abs=0.05)
    assert row["channel_std"][1] == 0


def test_handcrafted_fingerprint_has_its_dimension_and_unit_norm() -> None:
    vector = timeseries.analyze(log(), Limits()).vector
    assert vector.shape == (timeseries.HANDCRAFTED_DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert timeseries.analyze(log(rate_hz=50.0), Limits()).vector @ vector < 0.999


def test_sample_logs(sample_dir: Path) -> None:
    for path in sorted(sample_dir.glob("sample-*/sensor.csv")):
        source = pl.read_csv(path)
        row = timeseries.analyze(path.read_bytes(), Limits()).features
        assert row["rows"] == source.height
        assert row["channels"] == ["accel_x", "accel_y", "accel_z", "temperature_c"]
        assert row["sample_rate_hz"] == pytest.approx(20.0, rel=0.05)
        assert row["duration_s"] == pytest.approx(5.0, abs=0.6)
        assert row["channel_mean"][2] == pytest.approx(source["accel_z"].mean(), rel=1e-4)


def test_rows_out_of_order_are_sorted_by_time() -> None:
    data = b"ts,x\n2024-01-01 00:00:02,3\n2024-01-01 00:00:00,1\n2024-01-01 00:00:01,2\n"
    times, channels = timeseries.decode(data, Limits())
    assert times.is_sorted()
    assert channels["x"].to_list() == [1, 2, 3]


def test_epoch_seconds_are_timestamps() -> None:
    data = b"time,x\n1700000000,1\n1700000000.5,2\n1700000001,3\n"
    row = timeseries.analyze(data, Limits()).features
    assert row["start_time"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert row["duration_s"] == pytest.approx(1.0)
    assert row["sample_rate_hz"] == pytest.approx(2.0)


def test_offsets_are_converted_to_utc() -> None:
    data = b"datetime,x\n2024-01-01T02:00:00+02:00,1\n2024-01-01T02:00:01+02:00,2\n"
    assert timeseries.analyze(data, Limits()).features["start_time"] == datetime(
        2024, 1, 1, tzinfo=UTC
    )


def test_missing_readings_are_carried_forward() -> None:
    data = b"t,x\n2024-01-01T00:00:00,1\n2024-01-01T00:00:01,\n2024-01-01T00:00:02,4\n"
    assert timeseries.analyze(data, Limits()).features["channel_mean"] == pytest.approx([2.0])


def test_unparseable_timestamps_are_rejected() -> None:
    data = b"timestamp,x\n2024-01-01T00:00:00Z,1\nyesterday,2\nsoon,3\n"
    with pytest.raises(Rejected) as caught:
        timeseries.analyze(data, Limits())
    assert caught.value.stage == "decode"
    assert caught.value.reason == "2 timestamps in 'timestamp' do not parse"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"value,x\n1,2\n3,4\n", "no timestamp column"),
        (b"ts,label\n2024-01-01T00:00:00,a\n2024-01-01T00:00:01,b\n", "no numeric channels"),
        (b"ts,x\n2024-01-01T00:00:00,1\n", "has 1 rows; at least 2 are needed"),
        (b"ts,x\n\xff\xfe,1\n", "not a readable CSV"),
    ],
)
def test_logs_that_cannot_be_measured_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        timeseries.analyze(data, Limits())
    assert caught.value.stage == "decode"
    assert reason in caught.value.reason


def test_fingerprint_holds_the_dominant_frequency_over_nyquist() -> None:
    # 4 s at 10 Hz of a 1 Hz sine: 1 Hz over a 5 Hz Nyquist frequency is 0.2.
    vector = timeseries.analyze(log(rows=40, rate_hz=10.0), Limits()).vector
    raw = vector / vector[3]  # element 3 is 1.0 before normalisation
    assert raw[1] == pytest.approx(np.log1p(10.0) / 5)
    assert raw[2] == pytest.approx(0.2)  # two channels / 10
    assert raw[6] == pytest.approx(0.2)
    assert raw[9] == 0  # the constant channel has no dominant frequency


def test_a_log_too_wide_or_too_long_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 14 MB CSV of a million columns once took 303 s and 5 GB, then landed."""
    wide = ("timestamp," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n").encode()
    wide += ("0," + ",".join("1" for _ in range(1_000_000)) + "\n").encode() * 2
    long_log = b"timestamp,x\n" + b"".join(b"%d,1\n" % i for i in range(101))

    def parsed(*_: object, **__: object) -> None:
        raise AssertionError("the CSV was parsed before its shape was checked")

    monkeypatch.setattr(pl, "read_csv", parsed)
    with pytest.raises(Rejected, match="1000001 columns, over the limit of 1000"):
        timeseries.decode(wide, Limits())
    with pytest.raises(Rejected, match="101 rows, over the limit of 100"):
        timeseries.decode(long_log, Limits(max_csv_rows=100))
    monkeypatch.undo()
    assert timeseries.decode(long_log, Limits(max_csv_rows=101))[0].len() == 101
