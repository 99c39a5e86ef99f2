"""The Braid pipeline: discover → extract per modality in batches (Dask) → land → fuse → catalog."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner, get_dask_client

from blocks.settings import BraidSettings, resolve_settings
from tasks import fuse, lake
from tasks.common import MODALITIES, Limits, Models, ObjectRef
from tasks.discover import Discovery, discover
from tasks.extract import (
    BatchResult,
    embedding_dim,
    extract_batch,
    model_id_for,
    rejected_at_discovery,
)
from tasks.tables import TABLES, feature_table


@task(name="discover-objects", retries=2, retry_delay_seconds=5)
def discover_objects(source: str, lake_path: str, limits: Limits) -> Discovery:
    """List the source, hash and sniff each object, and skip what the lake already holds."""
    return discover(source, lake.known_object_ids(lake_path), limits)


@contextmanager
def dask_mapper() -> Iterator[Callable[..., list[Any]]]:
    """Map plain functions over a batch on the flow's Dask cluster.

    The calling task secedes from its worker's thread pool while it waits, so the
    objects of its batch can run on every worker, its own included.
    """
    from distributed import rejoin, secede

    # Not the default client: closing it must not leave the worker a closed default.
    with get_dask_client(set_as_default=False) as client:

        def mapper(function: Callable[..., Any], items: list[Any]) -> list[Any]:
            futures = client.map(function, items, pure=False)
            secede()
            try:
                return client.gather(futures)  # type: ignore[no-any-return]
            finally:
                rejoin()

        yield mapper


@task(name="extract-features", tags=["braid-extract"])
def extract_features(
    modality: str, refs: list[ObjectRef], models: Models, limits: Limits, flow_run_id: str
) -> BatchResult:
    """Decode, measure and embed one batch of one modality."""
    with dask_mapper() as mapper:
        return extract_batch(modality, refs, models, limits, flow_run_id, mapper=mapper)


@task(name="land-batch")
def land_batch(lake_path: str, result: BatchResult, part: str) -> None:
    """Write a batch's rows; the objects part goes last, marking the batch as done."""
    if result.modality in MODALITIES:
        lake.write_part(lake_path, feature_table(result.modality), result.features, part)
    lake.write_part(lake_path, "quarantine", result.quarantine, part)
    lake.write_part(lake_path, "objects", result.objects, part)


@task(name="fuse-samples")
def fuse_samples(lake_path: str, sample_ids: list[str], models: Models, flow_run_id: str) -> int:
    """Re-fuse every sample that gained objects in this run; returns how many were fused."""
    if not sample_ids:
        return 0
    model_ids = {m: model_id_for(m, models) for m in MODALITIES}
    slot_dims = {m: embedding_dim(m, models) for m in MODALITIES}
    with lake.connect(lake_path, TABLES) as con:
        embeddings = fuse.load_sample_embeddings(con, sample_ids, model_ids)
    fused = fuse.fuse_samples(embeddings, slot_dims, model_ids, flow_run_id)
    lake.write_part(lake_path, "fused", fused, flow_run_id)
    return fused.height


@task(name="refresh-catalog")
def refresh_catalog(lake_path: str) -> str:
    """Rewrite the DuckDB catalog so every table's view sees the new parts."""
    return str(lake.write_catalog(lake_path, TABLES))


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


def dask_runner(address: str | None, workers: int | None) -> DaskTaskRunner:
    """An existing cluster by address, or a local one sized so torch threads don't fight for cores."""
    if address:
        return DaskTaskRunner(address=address)
    cores = os.cpu_count() or 1
    n_workers = workers or max(1, min(4, cores))
    # Local worker processes inherit these: they report task runs to this run's API
    # (rather than each starting an embedded server of its own) and size torch's pool.
    os.environ.setdefault("PREFECT_API_URL", get_client(sync_client=True).api_url.__str__())
    os.environ.setdefault("BRAID_TORCH_THREADS", str(max(1, cores // n_workers)))
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "silence_logs": logging.WARNING,
        }
    )


@flow(name="extract-modalities")
def extract_modalities(
    batches: list[tuple[str, list[ObjectRef]]],
    models: Models,
    limits: Limits,
    lake_path: str,
    flow_run_id: str,
) -> dict[str, Counter[str]]:
    """Run every batch on the Dask cluster and land each one as it finishes."""
    logger = get_run_logger()
    futures = {
        extract_features.submit(modality, refs, models, limits, flow_run_id): index
        for index, (modality, refs) in enumerate(batches)
    }
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for done, future in enumerate(as_completed(list(futures)), start=1):
        result = future.result()
        index = futures[future]
        land_batch(lake_path, result, f"{flow_run_id}-{result.modality}-{index:05d}")
        counts[result.modality]["landed"] += result.landed
        counts[result.modality]["quarantined"] += result.quarantined
        logger.info(
            "batch %d/%d (%s): %d landed, %d quarantined",
            done, len(batches), result.modality, result.landed, result.quarantined,
        )  # fmt: skip
    return counts


@flow(name="braid-pipeline")
def pipeline(
    source: str,
    lake_path: str | None = None,
    settings_block: str | None = None,
    text_model: str | None = None,
    image_model: str | None = None,
    audio_model: str | None = None,
    batch_size: int | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """Turn what is new under ``source`` into validated feature tables, fused per sample."""
    started = time.perf_counter()
    settings: BraidSettings = resolve_settings(
        settings_block,
        lake=lake_path,
        text_model=text_model,
        image_model=image_model,
        audio_model=audio_model,
        batch_size=batch_size,
        dask_address=dask_address,
        dask_workers=dask_workers,
    )
    run_id = str(flow_run.id or "local")
    models, limits = settings.models(), settings.limits()
    found = discover_objects(source, settings.lake, limits)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    if found.rejected:
        land_batch(
            settings.lake, rejected_at_discovery(found.rejected, run_id), f"{run_id}-discover"
        )
        for item in found.rejected:
            counts[item["modality"]]["quarantined"] += 1
    batches = plan_batches(found.new, settings.batch_size)
    if batches:
        runner = dask_runner(settings.dask_address, settings.dask_workers)
        extracted = extract_modalities.with_options(task_runner=runner)(
            batches, models, limits, settings.lake, run_id
        )
        for modality, counter in extracted.items():
            counts[modality].update(counter)
    samples = sorted({ref.sample_id for ref in found.new})
    fused = fuse_samples(settings.lake, samples, models, run_id)
    catalog = refresh_catalog(settings.lake)
    return {
        "flow_run_id": run_id,
        "lake": settings.lake,
        "catalog": catalog,
        "new": len(found.new) + len(found.rejected),
        "known": found.known,
        "duplicates": found.duplicates,
        "modalities": {m: dict(c) for m, c in sorted(counts.items())},
        "samples_fused": fused,
        "seconds": round(time.perf_counter() - started, 2),
    }
