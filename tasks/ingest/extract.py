"""One batch of one modality, from object references to rows ready to land.

``analyze_object`` is the plain per-object function a Dask client maps over a batch
(read, decode, measure); ``extract_batch`` then embeds the batch in one model call and
builds the feature, quarantine and objects rows. A bad object becomes a quarantine row
with its stage and reason; it never fails the batch.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from tasks.common import (
    Analysis,
    Limits,
    Models,
    ObjectRef,
    Rejected,
    l2_normalise,
    reason_for,
    release_memory,
)
from tasks.ingest import budget
from tasks.lake.storage import read_bytes
from tasks.lake.store import rows_frame
from tasks.lake.tables import COSTS, OBJECTS, QUARANTINE, TABLES, feature_table
from tasks.media import registry

Mapper = Callable[[Callable[[ObjectRef], Any], list[ObjectRef]], Iterable[Any]]

# A Dask task costs a few milliseconds of scheduling; an image analysis about twenty.
MAX_OBJECTS_PER_TASK = 8


@dataclass
class BatchResult:
    """Rows a batch produced, ready to validate and land."""

    modality: str
    features: pl.DataFrame
    quarantine: pl.DataFrame
    objects: pl.DataFrame
    costs: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=COSTS))

    @property
    def landed(self) -> int:
        return self.features.height

    @property
    def quarantined(self) -> int:
        return self.quarantine.height


@dataclass
class Analysed:
    """One object's analysis (or rejection) and what reading and decoding it cost."""

    ref: ObjectRef
    result: Analysis | Rejected
    cpu_s: float
    wall_s: float


def analyze_object(ref: ObjectRef, limits: Limits) -> Analysed:
    """Read and analyse one object; any failure comes back as a rejection, never raised."""
    cpu, wall = time.process_time(), time.perf_counter()
    result: Analysis | Rejected
    try:
        data = read_bytes(ref.uri)
    except OSError as exc:
        result = Rejected("read", reason_for(exc))
    else:
        module = registry.modality(ref.modality)
        try:
            result = budget.within(
                limits.decode_seconds,
                limits.decode_memory_mb,
                partial(module.analyze, data, limits, ref.media_type),
            )
        except Rejected as rejection:
            # A copy, not the raised exception: its traceback holds every frame of the
            # decoder (the object's bytes, its decoded arrays) in a cycle through this
            # frame, which only the cyclic collector frees; across a plan of broken
            # objects that garbage reached gigabytes.
            result = Rejected(rejection.stage, rejection.reason)
        except Exception as exc:  # a decoder's own error: keep the batch going
            result = Rejected("decode", reason_for(exc))
    return Analysed(ref, result, time.process_time() - cpu, time.perf_counter() - wall)


def chunks(items: list[Any], threads: int) -> list[list[Any]]:
    """Cut a batch into tasks: about two per thread, so a slow object can't idle the rest,
    and at most ``MAX_OBJECTS_PER_TASK`` each, so scheduling stays a small share of the work."""
    size = max(1, min(MAX_OBJECTS_PER_TASK, -(-len(items) // (2 * max(1, threads)))))
    return [items[start : start + size] for start in range(0, len(items), size)]


def apply_each(items: list[Any], function: Callable[[Any], Any]) -> list[Any]:
    """``function`` over a chunk of items, in order: one Dask task's work."""
    return [function(item) for item in items]


def embed_batch(
    modality: str, analyses: list[Analysis], models: Models, limits: Limits
) -> list[dict[str, Any] | Rejected]:
    """Embed a batch in one call; if the batch call fails, embed one by one to isolate the culprit."""
    if not analyses:
        return []
    try:
        columns = registry.modality(modality).embed_batch(analyses, models, limits)
        return [{name: values[i] for name, values in columns.items()} for i in range(len(analyses))]
    except Exception as exc:
        # One object alone is its own culprit, also when the whole batch was that one object.
        if len(analyses) == 1:
            return [Rejected("embed", reason_for(exc))]
    results: list[dict[str, Any] | Rejected] = []
    for analysis in analyses:
        results.extend(embed_batch(modality, [analysis], models, limits))
    return results


def extract_batch(
    modality: str,
    refs: list[ObjectRef],
    models: Models,
    limits: Limits,
    flow_run_id: str,
    mapper: Mapper = map,
) -> BatchResult:
    """Analyse, embed and tabulate one batch; ``mapper`` spreads the per-object work (Dask)."""
    analysed: list[Analysed] = list(mapper(partial(analyze_object, limits=limits), refs))
    return finish_batch(modality, analysed, models, limits, flow_run_id)


def finish_batch(
    modality: str, analysed: list[Analysed], models: Models, limits: Limits, flow_run_id: str
) -> BatchResult:
    """Embed a batch's analyses in one model call and build its feature, quarantine and objects rows."""
    good = [(a.ref, a.result) for a in analysed if isinstance(a.result, Analysis)]
    failed = [(a.ref, a.result) for a in analysed if isinstance(a.result, Rejected)]
    cpu, wall = time.process_time(), time.perf_counter()
    embedded = embed_batch(modality, [a for _, a in good], models, limits)
    embed_cpu, embed_wall = time.process_time() - cpu, time.perf_counter() - wall
    model_id = registry.model_id(modality, models)
    now = datetime.now(UTC)
    cost_rows = [
        {"modality": modality, "object_id": a.ref.object_id, "stage": "decode",
         "cpu_s": a.cpu_s, "wall_s": a.wall_s, "flow_run_id": flow_run_id, "landed_at": now}
        for a in analysed
    ] + [
        # One model call embeds the whole batch: its cost is shared evenly.
        {"modality": modality, "object_id": ref.object_id, "stage": "embed",
         "cpu_s": embed_cpu / len(good), "wall_s": embed_wall / len(good),
         "flow_run_id": flow_run_id, "landed_at": now}
        for ref, _ in good
    ]  # fmt: skip
    feature_rows, object_rows, quarantine_rows = [], [], []
    vectors: list[np.ndarray] = []
    for (ref, analysis), columns in zip(good, embedded, strict=True):
        if isinstance(columns, Rejected):
            failed.append((ref, columns))
            continue
        vector = l2_normalise(columns.pop("embedding"))
        row: dict[str, Any] = {
            "object_id": ref.object_id,
            "sample_id": ref.sample_id,
            "modality": modality,
            "uri": ref.uri,
            "media_type": ref.media_type,
            "size_bytes": ref.size,
            **analysis.features,
            "embedding": None,  # set from ``vectors`` below, as one array
            "embedding_dim": int(vector.shape[0]),
            "model_id": model_id,
            "flow_run_id": flow_run_id,
            "landed_at": now,
            **columns,  # a modality's other model-made columns (video: its audio track's)
        }
        feature_rows.append(row)
        vectors.append(np.asarray(vector, dtype=np.float32))
        object_rows.append(_object_row(ref, "landed", flow_run_id, now))
    for ref, rejection in failed:
        quarantine_rows.append(quarantine_row(ref, rejection, flow_run_id, now))
        object_rows.append(_object_row(ref, "quarantined", flow_run_id, now))
    return BatchResult(
        modality=modality,
        features=_with_embeddings(
            rows_frame(feature_rows, TABLES[feature_table(modality)].schema), vectors
        ),
        quarantine=rows_frame(quarantine_rows, QUARANTINE),
        objects=rows_frame(object_rows, OBJECTS),
        costs=rows_frame(cost_rows, COSTS),
    )


def _with_embeddings(frame: pl.DataFrame, vectors: list[np.ndarray]) -> pl.DataFrame:
    """The frame with its ``embedding`` column built from the rows' vectors in one array:
    millions of Python floats for a large batch cost more than the work that made them."""
    if not vectors:
        return frame
    dims = {v.shape[0] for v in vectors}
    if len(dims) == 1:
        column = pl.Series("embedding", np.stack(vectors)).cast(pl.List(pl.Float32()))
    else:  # lengths differ (a model's failure): kept as they are, for validation to catch
        column = pl.Series("embedding", [v.tolist() for v in vectors], pl.List(pl.Float32()))
    return frame.with_columns(column)


def _object_row(ref: ObjectRef, status: str, flow_run_id: str, now: datetime) -> dict[str, Any]:
    return {
        "object_id": ref.object_id,
        "uri": ref.uri,
        "sample_id": ref.sample_id,
        "modality": ref.modality,
        "media_type": ref.media_type,
        "size_bytes": ref.size,
        "discovered_at": now,
        "status": status,
        "flow_run_id": flow_run_id,
        "landed_at": now,
    }


def quarantine_row(
    ref: ObjectRef, rejection: Rejected, flow_run_id: str, now: datetime
) -> dict[str, Any]:
    """The quarantine row of a rejected object."""
    return {
        "object_id": ref.object_id,
        "uri": ref.uri,
        "sample_id": ref.sample_id,
        "modality": ref.modality,
        "stage": rejection.stage,
        "reason": rejection.reason,
        "quarantined_at": now,
        "flow_run_id": flow_run_id,
        "landed_at": now,
    }


def rejected_at_discovery(rejected: list[dict[str, Any]], flow_run_id: str) -> BatchResult:
    """Rows for objects refused before any modality could take them (empty, unknown, mislabelled)."""
    now = datetime.now(UTC)
    quarantine, objects = [], []
    for item in rejected:
        ref = ObjectRef(item["object_id"], item["uri"], item["sample_id"], item["modality"],
                        item["media_type"] or "", item["size_bytes"])  # fmt: skip
        quarantine.append(
            quarantine_row(ref, Rejected(item["stage"], item["reason"]), flow_run_id, now)
        )
        objects.append(_object_row(ref, "quarantined", flow_run_id, now))
    return BatchResult(
        modality="unknown",
        features=pl.DataFrame(),
        quarantine=rows_frame(quarantine, QUARANTINE),
        objects=rows_frame(objects, OBJECTS),
    )


def validation_rejects(failed: pl.DataFrame, flow_run_id: str) -> pl.DataFrame:
    """Quarantine rows for rows that failed validation; a fused row is filed under its sample."""
    now = datetime.now(UTC)
    if "object_id" in failed.columns:
        ids = failed.select("object_id", "uri", "sample_id", "modality", "reason")
    else:
        ids = failed.select(
            ("fused:" + pl.col("sample_id")).alias("object_id"),
            pl.lit("").alias("uri"),
            "sample_id",
            pl.lit("fused").alias("modality"),
            "reason",
        )
    return rows_frame(
        (
            {
                **row,
                "stage": "validate",
                "quarantined_at": now,
                "flow_run_id": flow_run_id,
                "landed_at": now,
            }
            for row in ids.iter_rows(named=True)
        ),
        QUARANTINE,
    )


def failed_batch(
    modality: str, refs: list[ObjectRef], reason: str, flow_run_id: str
) -> BatchResult:
    """A batch whose child run failed: every object quarantined at stage ``extract``, none lost."""
    now = datetime.now(UTC)
    rejection = Rejected("extract", reason)
    return BatchResult(
        modality=modality,
        features=rows_frame([], TABLES[feature_table(modality)].schema),
        quarantine=rows_frame(
            [quarantine_row(r, rejection, flow_run_id, now) for r in refs], QUARANTINE
        ),
        objects=rows_frame(
            [_object_row(r, "quarantined", flow_run_id, now) for r in refs], OBJECTS
        ),
    )


def extract_plan(
    batches: list[tuple[str, list[ObjectRef]]],
    models: Models,
    limits: Limits,
    flow_run_id: str,
    threads: int,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> list[BatchResult]:
    """Every batch of a plan on ``threads`` threads of this process, one result per batch in order.

    Decoders and models release the GIL (Pillow, numpy, PyAV, torch), so threads share one
    copy of the imports and of each model where worker processes would each load their own.
    Each batch's objects are analysed a few per task (``chunks``), and the batch is
    embedded in one model call as soon as its last chunk is done. Tasks run by priority:
    a batch's embedding before any later batch's analysis, and earlier batches first,
    so batches finish in turn and only a few are held in memory at once; the plan's
    modalities are interleaved, so the cores decode one modality while they embed
    another. The models are loaded first (once per process). ``on_batch`` is called in
    the calling thread with each batch's result as it finishes (progress). torch runs one
    thread per call here, so concurrent model calls do not fight for the same cores.
    """
    from tasks.media.encoders import set_torch_threads

    set_torch_threads(1 if threads > 1 else None)
    batches = interleave(batches)
    # Before the threads start: imports and model loads are Python work that holds the
    # GIL, and beside busy decoding threads they would take several times as long.
    registry.warm(sorted({modality for modality, _ in batches}), models)
    analyse = partial(analyze_object, limits=limits)
    finished: queue.Queue[int | BaseException] = queue.Queue()
    pool = PriorityPool(threads, on_error=finished.put)
    results: list[BatchResult | None] = [None] * len(batches)
    for index, (modality, refs) in enumerate(batches):
        batch = _Batch(index, modality, chunks(refs, threads))

        def finish(batch: _Batch) -> None:
            results[batch.index] = finish_batch(
                batch.modality, batch.analysed(), models, limits, flow_run_id
            )
            finished.put(batch.index)

        def analyse_part(batch: _Batch, part: int) -> None:
            if batch.done(part, apply_each(batch.parts[part], analyse)):  # its last part
                pool.submit((batch.index, 0), finish, batch)

        for part in range(len(batch.parts)):
            pool.submit((batch.index, 1), analyse_part, batch, part)
    # Progress is reported from this thread, whose context (a Prefect run's, say) the
    # pool's threads do not have.
    for _ in batches:
        ready = finished.get()
        if isinstance(ready, BaseException):
            break
        if on_batch is not None:
            on_batch(results[ready])  # type: ignore[arg-type]
        # What the batch's decoders freed goes back now, not at the end: glibc keeps freed
        # pages in each thread's heap, and over a long plan they add up to gigabytes.
        release_memory(collect=False)
    pool.wait()
    release_memory()  # the decoders' buffers and the models' activations
    return [r for r in results if r is not None]


class _Batch:
    """One batch of ``extract_plan``: its parts (chunks of objects) and their analyses."""

    def __init__(self, index: int, modality: str, parts: list[list[ObjectRef]]) -> None:
        self.index, self.modality, self.parts = index, modality, parts
        self._analysed: list[list[Analysed] | None] = [None] * len(parts)
        self._remaining = len(parts)
        self._lock = threading.Lock()

    def done(self, part: int, analysed: list[Analysed]) -> bool:
        """Record a part's analyses; True for the call that completed the batch."""
        with self._lock:
            self._analysed[part] = analysed
            self._remaining -= 1
            return self._remaining == 0

    def analysed(self) -> list[Analysed]:
        return [a for part in self._analysed if part for a in part]


class PriorityPool:
    """Threads that run submitted calls lowest priority first; ``wait`` joins them and
    re-raises the first error a call raised (an object's own failures never raise: they
    come back as rejections)."""

    def __init__(
        self, threads: int, on_error: Callable[[BaseException], None] = lambda _: None
    ) -> None:
        self._on_error = on_error
        self._heap: list[tuple[Any, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._pending = 0
        self._count = 0
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, daemon=True, name=f"braid-extract-{i}")
            for i in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: Any, function: Callable[..., None], *args: Any) -> None:
        with self._cond:
            self._count += 1
            self._pending += 1
            call: Callable[[], None] = partial(function, *args)
            heapq.heappush(self._heap, (priority, self._count, call))
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and (self._pending or not self._closed):
                    self._cond.wait()
                if not self._heap:  # closed, and every call done
                    return
                _, _, call = heapq.heappop(self._heap)
            try:
                call()
            except BaseException as exc:
                with self._cond:
                    self._error = self._error or exc
                self._on_error(exc)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def wait(self) -> None:
        """Run everything submitted (calls may submit more), then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error


def interleave(batches: list[tuple[str, list[ObjectRef]]]) -> list[tuple[str, list[ObjectRef]]]:
    """The batches round-robin by modality (image, text, image, text, ...), each in order."""
    by_modality: dict[str, list[tuple[str, list[ObjectRef]]]] = defaultdict(list)
    for batch in batches:
        by_modality[batch[0]].append(batch)
    queues = list(by_modality.values())
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues
            if i < len(q)]  # fmt: skip


def _finish_parts(
    modality: str, parts: list[list[Analysed]], models: Models, limits: Limits, run_id: str
) -> BatchResult:
    return finish_batch(modality, [a for part in parts for a in part], models, limits, run_id)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def merge_batches(modality: str, results: list[BatchResult]) -> BatchResult:
    """One modality's batch results as one (a child run's, staged for its parent)."""
    return BatchResult(
        modality,
        features=pl.concat([r.features for r in results]),
        quarantine=pl.concat([r.quarantine for r in results]),
        objects=pl.concat([r.objects for r in results]),
        costs=pl.concat([r.costs for r in results]),
    )


def plan_batches(refs: list[ObjectRef], batch_size: int) -> list[tuple[str, list[ObjectRef]]]:
    """Group new objects by modality and cut each group into batches."""
    by_modality: dict[str, list[ObjectRef]] = defaultdict(list)
    for ref in refs:
        by_modality[ref.modality].append(ref)
    return [
        (modality, group[start : start + batch_size])
        for modality, group in sorted(by_modality.items())
        for start in range(0, len(group), batch_size)
    ]
