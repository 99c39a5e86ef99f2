"""Timed sensor streams: CSV logs with a timestamp column.

Handcrafted embedding (``braid/handcrafted-timeseries-v1``, 16 floats, L2-normalised), a
coarse fingerprint of the stream:

    [0]     log1p(duration in seconds) / 5
    [1]     log1p(sample rate in Hz) / 5
    [2]     number of numeric channels / 10
    [3]     1.0 (keeps the vector non-zero for constant streams)
    [4:16]  for the first four numeric channels, in file order:
            tanh(mean / 10), tanh(standard deviation), dominant frequency / Nyquist
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import polars as pl

from tasks.common import (
    Analysis,
    Limits,
    Models,
    Rejected,
    decode_text,
    l2_normalise,
    text_encoding,
)

HANDCRAFTED_MODEL = "braid/handcrafted-timeseries-v1"
HANDCRAFTED_DIM = 16
DEPENDS_ON: tuple[str, ...] = ()
FINGERPRINT_CHANNELS = 4
# Header names that mark a CSV as a timed stream (discovery sniffs with them too).
TIMESTAMP_COLUMNS = {"timestamp", "time", "ts", "datetime", "t", "date_time", "time_s"}

# Bump when the code that computes this table's features or handcrafted vector changes:
# rows of the old version are then recomputed by the next run, beside the old ones.
FEATURE_VERSION = 1

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "rows": pl.Int64(),
    "channels": pl.List(pl.String()),
    "start_time": pl.Datetime("us", "UTC"),
    "end_time": pl.Datetime("us", "UTC"),
    "duration_s": pl.Float64(),
    "sample_rate_hz": pl.Float32(),
    "channel_mean": pl.List(pl.Float32()),
    "channel_std": pl.List(pl.Float32()),
}


def decode(data: bytes, limits: Limits) -> tuple[pl.Series, pl.DataFrame]:
    """Parse a CSV log into its UTC timestamps (sorted) and its numeric channels."""
    try:
        if text_encoding(data)[0] != "utf-8":  # UTF-16/32 behind a byte-order mark
            data = decode_text(data).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("decode", f"not a readable CSV: {type(exc).__name__}: {exc}") from exc
    _check_shape(data, limits)
    try:
        frame = pl.read_csv(io.BytesIO(data), try_parse_dates=False, infer_schema_length=1000)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise Rejected("decode", f"not a readable CSV: {type(exc).__name__}: {exc}") from exc
    column = next((c for c in frame.columns if c.strip().lower() in TIMESTAMP_COLUMNS), None)
    if column is None:
        raise Rejected("decode", "no timestamp column")
    times = _parse_times(frame[column])
    if times.null_count() > 0:
        raise Rejected("decode", f"{times.null_count()} timestamps in '{column}' do not parse")
    numeric = frame.drop(column).select(
        [c for c, dtype in frame.drop(column).schema.items() if dtype.is_numeric()]
    )
    if frame.height < 2:
        raise Rejected("decode", f"sensor log has {frame.height} rows; at least 2 are needed")
    if numeric.width == 0:
        raise Rejected("decode", "sensor log has no numeric channels")
    order = times.arg_sort()
    return times.gather(order), numeric[order]


def _check_shape(data: bytes, limits: Limits) -> None:
    """Refuse a log wider or longer than the limits, counted in its bytes before parsing
    (a million columns took minutes and gigabytes to parse). Quoted commas count too."""
    end = data.find(b"\n")
    columns = data[: end if end >= 0 else len(data)].count(b",") + 1
    if columns > limits.max_csv_columns:
        raise Rejected(
            "decode",
            f"sensor log has {columns} columns, over the limit of {limits.max_csv_columns} "
            "(max_csv_columns)",
        )
    rows = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - 1
    if rows > limits.max_csv_rows:
        raise Rejected(
            "decode",
            f"sensor log has {rows} rows, over the limit of {limits.max_csv_rows} (max_csv_rows)",
        )


def _parse_times(column: pl.Series) -> pl.Series:
    """ISO-8601 strings, or numbers meaning seconds since the epoch."""
    if column.dtype.is_numeric():
        return (column.cast(pl.Float64) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    text = column.cast(pl.String)
    parsed = text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    return parsed


def features(times: pl.Series, channels: pl.DataFrame) -> tuple[dict[str, Any], np.ndarray]:
    """Span, rate and per-channel statistics, and the handcrafted fingerprint."""
    seconds = (times.cast(pl.Int64).to_numpy() - times.cast(pl.Int64)[0]) / 1e6
    duration = float(seconds[-1])
    steps = np.diff(seconds)
    step = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
    rate = 1.0 / step if step > 0 else 0.0
    values = channels.cast(pl.Float64).fill_null(strategy="forward").fill_null(0.0).to_numpy()
    mean, std = values.mean(axis=0), values.std(axis=0)
    fingerprint = [np.log1p(duration) / 5.0, np.log1p(rate) / 5.0, channels.width / 10.0, 1.0]
    for index in range(FINGERPRINT_CHANNELS):
        if index < channels.width:
            fingerprint += [
                np.tanh(mean[index] / 10.0),
                np.tanh(std[index]),
                _dominant_frequency(values[:, index], rate) / (rate / 2) if rate else 0.0,
            ]
        else:
            fingerprint += [0.0, 0.0, 0.0]
    row = {
        "rows": len(times),
        "channels": channels.columns,
        "start_time": times[0],
        "end_time": times[-1],
        "duration_s": duration,
        "sample_rate_hz": rate,
        "channel_mean": mean.astype(np.float32).tolist(),
        "channel_std": std.astype(np.float32).tolist(),
    }
    return row, l2_normalise(np.asarray(fingerprint, dtype=np.float32))


def _dominant_frequency(values: np.ndarray, rate: float = 1.0) -> float:
    """Frequency (cycles per sample when rate is 1) of the strongest non-DC component."""
    if values.size < 4:
        return 0.0
    spectrum = np.abs(np.fft.rfft(values - values.mean()))
    if not spectrum[1:].any():
        return 0.0  # a constant channel has no frequency
    return float(np.argmax(spectrum[1:]) + 1) / values.size * rate


def analyze(data: bytes, limits: Limits, media_type: str = "") -> Analysis:
    """Parse and summarise one sensor log."""
    times, channels = decode(data, limits)
    row, vector = features(times, channels)
    return Analysis(features=row, vector=vector)


def encoder(models: Models) -> tuple[str | None, str]:
    """Timed streams have no model yet: always the handcrafted fingerprint."""
    return None, ""


def embed_batch(analyses: list[Analysis], models: Models, limits: Limits) -> dict[str, Any]:
    """The embedding column of a batch: the handcrafted fingerprints."""
    return {"embedding": np.stack([a.vector for a in analyses])}
