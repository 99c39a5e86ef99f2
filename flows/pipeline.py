"""The Braid pipeline: discover → extract per modality in batches (Dask) → validate → land →
fuse → validate → land → catalog. ``redrive`` sends quarantined objects through the same path."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import polars as pl
from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from blocks.settings import BraidSettings, RunOptions, resolve_settings
from data_quality.validate import (
    Validation,
    build_docs,
    prepare_in_background,
    results_frame,
    to_markdown,
    validate_table,
)
from tasks.common import MODALITIES, Limits, Models, ObjectRef, release_memory
from tasks.faults import crash_point
from tasks.ingest import fuse, land
from tasks.ingest import plan as planning
from tasks.ingest.costs import CostLog, summarise_costs
from tasks.ingest.discover import Discovery, discover, inspect_object
from tasks.ingest.extract import (
    BatchResult,
    apply_each,
    chunks,
    extract_batch,
    extract_plan,
    failed_batch,
    merge_batches,
    plan_batches,
    usable_cores,
)
from tasks.ingest.plan import Plan
from tasks.lake import store as lake
from tasks.lake.lock import lake_lock, remove_stale_staging, staging_dir
from tasks.lake.query import quarantined_objects
from tasks.lake.storage import object_size, use_credentials_block
from tasks.lake.store import rows_frame
from tasks.lake.tables import OBJECTS, TABLES, feature_table
from tasks.media.identity import ModelSet, SlotModel, resolve_model_set

if TYPE_CHECKING:
    pass

QUALITY_DOCS = "_quality/docs"


T = TypeVar("T")


def unwalked(value: T) -> T:
    """A large task argument Prefect passes as it is (``quote``): otherwise it walks every
    item, looking for futures, once to resolve the argument and once to record the task's
    inputs (seconds for thousands of object references). Typed as the value it wraps, which
    is what the task receives."""
    return cast(T, quote(value))


class QualityGateFailed(RuntimeError):
    """A table under the ``fail`` policy did not pass its suite; nothing of it landed."""


def limits_of(settings: BraidSettings) -> Limits:
    """The processing limits as plain data for tasks."""
    return Limits(
        max_object_bytes=settings.max_object_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_duration_s=settings.max_duration_s,
        frames_per_second=settings.frames_per_second,
        max_video_frames=settings.max_video_frames,
        max_video_pixels=settings.max_video_pixels,
        max_csv_columns=settings.max_csv_columns,
        max_csv_rows=settings.max_csv_rows,
        decode_seconds=settings.decode_seconds,
        decode_memory_mb=settings.decode_memory_mb,
    )


def models_of(settings: BraidSettings) -> Models:
    """The encoder choices as plain data for tasks."""
    return Models(
        text=settings.text_model,
        image=settings.image_model or None,
        audio=settings.audio_model or None,
    )


def quality_params(settings: BraidSettings, model_set: ModelSet) -> dict[str, Any]:
    """Values the suites' ``$parameters`` take for this run."""
    dims = model_set.dims
    return {
        **{f"{m}_dim": dims[m] for m in MODALITIES},
        "fused_dim": model_set.fused_dim,
        "model_set": model_set.key,
        "norm_tolerance": settings.norm_tolerance,
        "max_duration_s": settings.max_duration_s,
        "max_image_pixels": settings.max_image_pixels,
        "max_video_frames": settings.max_video_frames,
        "max_text_chars": Limits.max_text_chars,
        "sample_rates": settings.sample_rates,
        "max_channels": settings.max_channels,
        "min_fps": settings.min_fps,
        "max_fps": settings.max_fps,
    }


@task(name="discover-objects", retries=2, retry_delay_seconds=5)
def discover_objects(source: str, limits: Limits) -> Discovery:
    """List the source, hash and sniff each object (what is already landed is the plan's to say)."""
    return discover(source, set(), limits)


@contextmanager
def dask_mapper() -> Iterator[Callable[..., list[Any]]]:
    """Map plain functions over a batch on the flow's Dask cluster.

    Items go to Dask a few per task (``chunks``): per object, scheduling would cost a
    third of an image's decoding. The calling task secedes from its worker's thread
    pool while it waits, so its batch can run on every worker, its own included.
    """
    from distributed import rejoin, secede
    from prefect_dask import get_dask_client

    # Not the default client: closing it must not leave the worker a closed default.
    # prefect-dask annotates **client_kwargs as dict values, wrongly.
    with get_dask_client(set_as_default=False) as client:  # type: ignore[arg-type]

        def mapper(function: Callable[..., Any], items: list[Any]) -> list[Any]:
            threads = sum(client.nthreads().values())
            futures = client.map(apply_each, chunks(items, threads), function=function, pure=False)
            secede()
            try:
                return [result for chunk in client.gather(futures) for result in chunk]
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


@task(name="extract-in-process", tags=["braid-extract"], cache_policy=NO_CACHE)
def extract_in_process(
    batches: list[tuple[str, list[ObjectRef]]], models: Models, limits: Limits, flow_run_id: str
) -> dict[str, list[BatchResult]]:
    """Every batch on threads of the flow's own process, sharing one copy of each model."""
    logger = get_run_logger()
    threads = usable_cores()
    logger.info("extracting %d batches on %d threads of this process", len(batches), threads)
    done = [0]

    def progress(result: BatchResult) -> None:
        done[0] += 1
        logger.info(
            "batch %d/%d (%s): %d extracted, %d quarantined",
            done[0], len(batches), result.modality, result.landed, result.quarantined,
        )  # fmt: skip

    results: dict[str, list[BatchResult]] = defaultdict(list)
    for result in extract_plan(batches, models, limits, flow_run_id, threads, progress):
        results[result.modality].append(result)
    return dict(results)


@task(name="validate-table")
def validate_rows(
    table: str, frame: pl.DataFrame, params: dict[str, Any], policy: str
) -> Validation:
    """The quality gate: run the table's suite and publish the result as an artifact."""
    validation = validate_table(table, frame, params, policy)
    create_markdown_artifact(
        key=f"braid-quality-{table.replace('_', '-')}",
        markdown=to_markdown(validation),
        description=f"Great Expectations validation of {table}",
    )
    return validation


@task(name="land-table")
def land_table(
    lake_path: str, modality: str, results: list[BatchResult], validation: Validation,
    slot: SlotModel, run_id: str,
) -> Counter[str]:  # fmt: skip
    """Land a modality's validated rows, its quarantine and its objects (the objects part last)."""
    checked = checked_rows(validation, run_id)
    return land.land_features(lake_path, modality, results, checked, slot, run_id)


@task(name="plan-run")
def plan_objects(
    lake_path: str, found: Discovery, model_set: ModelSet, run_id: str, redrive: bool
) -> tuple[Plan, Fusion]:
    """What this run must extract (the objects without rows under the wanted model keys),
    and what it must fuse if it lands nothing."""
    with lake.connect(lake_path, TABLES) as con:
        return planning.plan_run(found, con, model_set, run_id, redrive), _fusion(con, model_set)


@task(name="plan-fusion")
def plan_fusion(lake_path: str, model_set: ModelSet) -> Fusion:
    """Samples to (re-)fuse, with their input fingerprints, and the lake's current model set."""
    with lake.connect(lake_path, TABLES) as con:
        return _fusion(con, model_set)


Fusion = tuple[dict[str, str], str | None]


def _fusion(con: Any, model_set: ModelSet) -> Fusion:
    return planning.samples_to_fuse(con, model_set), lake.current_model_set(con)[0]


@task(name="fuse-samples")
def fuse_samples(
    lake_path: str, fingerprints: dict[str, str], model_set: ModelSet, run_id: str
) -> pl.DataFrame:
    """Fuse the samples whose fused rows are missing or stale, from all their members' embeddings."""
    with lake.connect(lake_path, TABLES) as con:
        return fuse.fuse_from_lake(con, fingerprints, model_set, run_id)


def checked_rows(validation: Validation, run_id: str) -> land.Checked:
    """A validation as the plain data the landing rules take."""
    return land.Checked(
        passed=validation.passed,
        failed=validation.failed,
        policy=validation.policy,
        blocks_landing=validation.blocks_landing,
        results=results_frame(validation, run_id),
    )


@task(name="announce-landing")
def announce_landing(
    lake_path: str, run_id: str, counts: dict[str, dict[str, int]], samples: dict[str, list[str]]
) -> int:
    """Emit ``braid.batch.landed`` per landed table and ``braid.sample.landed`` per fused sample,
    for downstream deployments and automations to trigger on; returns how many were emitted."""
    from prefect.events import emit_event

    events = land.landing_events(lake_path, run_id, counts, samples)
    for event in events:
        emit_event(**event)
    return len(events)


@task(name="build-quality-docs")
def build_quality_docs(lake_path: str) -> str:
    """Write Great Expectations Data Docs for this run's validations under the lake."""
    return str(build_docs(Path(lake_path) / QUALITY_DOCS))


@task(name="refresh-catalog")
def refresh_catalog(lake_path: str) -> str:
    """Rewrite the DuckDB catalog so every table's view sees the new parts."""
    return str(lake.write_catalog(lake_path, TABLES))


def uses_dask_cluster(settings: BraidSettings) -> bool:
    """A local-fan-out run extracts on a Dask cluster when one is named (``dask_address``)
    or sized (``dask_workers``); otherwise on threads of its own process."""
    return bool(settings.dask_address or settings.dask_workers)


def dask_runner(address: str | None, workers: int | None) -> TaskRunner[Any]:
    """An existing cluster by address, or a local one sized so torch threads don't fight for cores."""
    from prefect_dask import DaskTaskRunner  # Dask loads only for runs that use it

    if address:
        return DaskTaskRunner(address=address)
    cores = os.cpu_count() or 1
    n_workers = workers or max(1, min(4, cores))
    # Local worker processes inherit these: they report task runs to this run's API
    # (rather than each starting an embedded server of its own) and size torch's pool.
    os.environ.setdefault("PREFECT_API_URL", str(get_client(sync_client=True).api_url))
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


def gather_batches(futures: list[Any], how: str) -> dict[str, list[BatchResult]]:
    """Collect batch results as they finish, grouped by modality, logging progress."""
    logger = get_run_logger()
    results: dict[str, list[BatchResult]] = defaultdict(list)
    for done, future in enumerate(as_completed(futures), start=1):
        result = future.result()
        results[result.modality].append(result)
        logger.info(
            "batch %d/%d (%s%s): %d extracted, %d quarantined",
            done, len(futures), result.modality, how, result.landed, result.quarantined,
        )  # fmt: skip
    return dict(results)


@flow(name="extract-modalities")
def extract_modalities(
    plan: str, models: Models, limits: Limits, flow_run_id: str
) -> dict[str, list[BatchResult]]:
    """Run every batch of a staged plan on the Dask cluster; results come back grouped by modality.

    The plan is staged (``stage_plan``) rather than passed: Prefect sends a flow run's
    parameters along with every task it submits to Dask, so a plan passed by value would
    be serialised and hashed once per batch, a cost that grows with the square of the run.
    """
    batches = lake.read_plan(plan)
    futures = [
        extract_features.submit(modality, refs, models, limits, flow_run_id)
        for modality, refs in batches
    ]
    return gather_batches(futures, "")


@flow(name="braid-process-batch")
def process_batch(
    modality: str,
    refs: list[ObjectRef],
    models: Models,
    limits: Limits,
    staging: str,
    part: str,
    parent_run_id: str,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    aws_credentials_block: str | None = None,
    batch_size: int | None = None,
) -> dict[str, int]:
    """One modality's share of an ingest run on its own work pool: extract it
    ``batch_size`` objects per batch, on threads of this process (one copy of the
    modality's models) or, when a cluster is named or sized, on Dask; stage the rows.

    The parent (the ingest run) validates and lands every child's rows once all have
    finished, so a table's quality gate sees the whole table and lands it at once.
    """
    use_credentials_block(aws_credentials_block)
    batches = plan_batches(refs, batch_size or len(refs))
    if dask_address or dask_workers:
        runner = dask_runner(dask_address, dask_workers)
        extracted = extract_modalities.with_options(task_runner=runner)(
            lake.stage_plan(staging, part, batches), models, limits, parent_run_id
        )
    else:  # a child run is already its own process (an ECS task): no cluster to start
        extracted = extract_in_process(unwalked(batches), models, limits, parent_run_id)
    result = merge_batches(modality, extracted[modality])
    lake.stage_frames(
        staging,
        part,
        {
            "features": result.features,
            "quarantine": result.quarantine,
            "objects": result.objects,
            "costs": result.costs,
        },
    )
    return {"extracted": result.landed, "quarantined": result.quarantined}


@task(name="run-batch-deployment", tags=["braid-fan-out"])
def run_batch_deployment(
    modality: str,
    refs: list[ObjectRef],
    part: str,
    staging: str,
    settings: BraidSettings,
    run_id: str,
) -> BatchResult:
    """Run ``process-<modality>`` for one batch and wait; a failed child quarantines its objects."""
    from prefect.deployments import run_deployment

    child: FlowRun = run_deployment(  # type: ignore[assignment]  # sync in a sync task
        name=f"braid-process-batch/process-{modality}",
        parameters={
            "modality": modality,
            "refs": [asdict(ref) for ref in refs],
            "models": asdict(models_of(settings)),
            "limits": asdict(limits_of(settings)),
            "staging": staging,
            "part": part,
            "parent_run_id": run_id,
            "aws_credentials_block": settings.aws_credentials_block,
            "batch_size": settings.batch_size,
        },
        timeout=None,
        poll_interval=2,
    )
    state = child.state
    if state is not None and state.is_completed():
        try:
            return BatchResult(modality, **lake.read_staged(staging, part, lake.STAGED_TABLES))
        except FileNotFoundError:
            reason = f"child flow run {child.name} completed but staged nothing"
    else:
        kind = state.type.value.lower() if state is not None else "unknown"
        message = (state.message or "") if state is not None else ""
        reason = f"child flow run {child.name} ({child.work_pool_name}) ended {kind}: {message}"
    get_run_logger().error("%s batch %s: %s", modality, part, reason)
    return failed_batch(modality, refs, reason, run_id)


def fan_out_to_deployments(
    batches: list[tuple[str, list[ObjectRef]]], settings: BraidSettings, run_id: str
) -> dict[str, list[BatchResult]]:
    """One child run per modality batch, each on its modality's pool; results come back staged."""
    staging = str(staging_dir(settings.lake, run_id))
    futures = [
        run_batch_deployment.submit(
            modality, refs, f"{modality}-{i:05d}", staging, settings, run_id
        )
        for i, (modality, refs) in enumerate(batches)
    ]
    return gather_batches(futures, ", child run")


def process(
    found: Discovery,
    settings: BraidSettings,
    run_id: str,
    costs: CostLog | None = None,
    redrive: bool = False,
) -> dict[str, Any]:
    """Plan, extract, validate, land and fuse; the body both flows share.

    Runs under the lake's writer lock: a second run waits, then plans from what the first
    landed. Staging that crashed runs left behind is removed first, this run's at the end.
    """
    logger = get_run_logger()
    with lake_lock(
        settings.lake, run_id, settings.lock_timeout_s, on_wait=logger.warning,
        on_stale=logger.warning,
    ) as previous:  # fmt: skip
        close_orphaned_run(previous, run_id, logger)
        removed = remove_stale_staging(settings.lake, run_id)
        if removed:
            logger.info("removed staging left by %d crashed runs: %s", len(removed), removed)
        try:
            return _process_locked(found, settings, run_id, costs or CostLog(run_id), redrive)
        finally:
            shutil.rmtree(staging_dir(settings.lake, run_id), ignore_errors=True)


def close_orphaned_run(previous: dict[str, Any], run_id: str, logger: Any) -> None:
    """Mark the lake's previous writer Crashed in the API if it is still shown as running
    though its process is gone: a run whose Prefect API stopped answering (a restart, an
    outage past the client's retries) ends without being able to say so, and would stay
    "Running" in the UI forever. Only a process on this host can be known to be gone."""
    from uuid import UUID

    pid = previous.get("pid")
    try:  # a flow run's id; not a command's (`braid models prune`) or a run without an API
        previous_id = UUID(str(previous.get("run_id", "")))
    except ValueError:
        return
    if str(previous_id) == run_id or previous.get("host") != socket.gethostname():
        return
    if isinstance(pid, int) and _process_alive(pid):
        return  # it released the lake and is finishing its run: its own state will follow
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(previous_id).state
            if state is None or state.is_final():
                return
            client.set_flow_run_state(
                previous_id,
                Crashed(message=(
                    f"its process (pid {pid}) ended without reporting how: it had lost the "
                    f"Prefect API; run {run_id} took over the lake and completes its work"
                )),
                force=True,
            )  # fmt: skip
    except Exception as exc:  # not one of this API's runs, or it cannot be read: leave it
        logger.debug("previous writer %s not closed: %s", previous_id, exc)
        return
    logger.warning("marked run %s Crashed: its process ended while it was shown %s",
                   previous_id, state.name)  # fmt: skip


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_locked(
    found: Discovery, settings: BraidSettings, run_id: str, costs: CostLog, redrive: bool
) -> dict[str, Any]:
    models, limits = models_of(settings), limits_of(settings)
    model_set = resolve_model_set(models)
    work, fusion = plan_objects(settings.lake, unwalked(found), model_set, run_id, redrive)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    land.land_members(settings.lake, work.members, run_id)
    for modality, n in land.land_rejections(settings.lake, work.rejected, run_id).items():
        counts[modality]["quarantined"] += n
    batches = plan_batches(work.extract, settings.batch_size)
    validations: list[Validation] = []
    params = quality_params(settings, model_set)
    if batches:
        small = len(work.extract) <= settings.inline_max_objects
        if small or settings.fan_out == "deployments" or uses_dask_cluster(settings):
            # Great Expectations loads while this process only waits on the batches, or
            # has a few objects to extract. (Not beside a large extraction on its own
            # threads: an import holds the GIL they decode under.)
            prepare_in_background()
        if settings.fan_out == "deployments" and not small:
            # A child run is a process (an ECS task) that loads its models before any
            # work: it gets up to child_batch_size objects, batch_size per Dask task.
            children = plan_batches(work.extract, settings.child_batch_size)
            extracted = fan_out_to_deployments(children, settings, run_id)
        elif uses_dask_cluster(settings) and not small:
            runner = dask_runner(settings.dask_address, settings.dask_workers)
            staging = staging_dir(settings.lake, run_id)
            extracted = extract_modalities.with_options(task_runner=runner)(
                lake.stage_plan(staging, "local", batches), models, limits, run_id
            )
        else:  # threads of this process: no cluster or child run to start, one model copy
            extracted = extract_in_process(unwalked(batches), models, limits, run_id)
            if not settings.keep_models:
                from tasks.media.encoders import unload_encoders

                if unload_encoders():
                    release_memory()  # the models, before validation and fusion need memory
        crash_point("extracted")
        for modality, results in sorted(extracted.items()):
            table = feature_table(modality)
            frame = pl.concat([r.features for r in results])
            with costs.measure("validate", modality):
                validation = validate_rows(table, frame, params, settings.policy_for(table))
            validations.append(validation)
            with costs.measure("land", modality):
                slot = model_set.slot(modality)
                landed = land_table(settings.lake, modality, results, validation, slot, run_id)
            counts[modality].update(landed)
            crash_point(f"landed:{modality}")
    fused = 0
    fused_samples: dict[str, list[str]] = {}
    if batches or not work.members.is_empty():  # the lake changed: plan fusion on what it holds now
        fusion = plan_fusion(settings.lake, model_set)
    fingerprints, current = fusion
    if fingerprints:
        prepare_in_background()
        with costs.measure("fuse", "fused"):
            rows = fuse_samples(settings.lake, unwalked(fingerprints), model_set, run_id)
        with costs.measure("validate", "fused"):
            validation = validate_rows("fused", rows, params, settings.policy_for("fused"))
        validations.append(validation)
        with costs.measure("land", "fused"):
            checked = checked_rows(validation, run_id)
            fused = land.land_fused(settings.lake, checked, fingerprints, model_set, run_id)
        fused_samples = dict(validation.passed.select("sample_id", "modalities").iter_rows())
        crash_point("landed:fused")
    if not any(v.blocks_landing for v in validations):
        land.land_model_set(settings.lake, model_set, current, run_id)
    wrote = bool(batches or work.rejected or fingerprints or not work.members.is_empty())
    if wrote:  # a run that finds nothing to do writes nothing
        lake.write_part(settings.lake, "costs", costs.frame(), f"{run_id}-run")
    tallies = {m: dict(c) for m, c in counts.items()}
    announce_landing(settings.lake, run_id, tallies, unwalked(fused_samples))
    docs = build_quality_docs(settings.lake) if validations else None
    catalog = refresh_catalog(settings.lake)
    crash_point("catalog")
    blocked = [v for v in validations if v.blocks_landing]
    if blocked:
        raise QualityGateFailed(
            "quality gate failed (policy fail), nothing landed for: "
            + "; ".join(f"{v.table}: {v.failed.height} failing rows" for v in blocked)
        )
    return {
        "flow_run_id": run_id,
        "lake": settings.lake,
        "catalog": catalog,
        "quality_docs": docs,
        "new": len(work.extract) + len(work.rejected),
        "known": work.done,
        "duplicates": found.duplicates,
        "model_set": model_set.key,
        "modalities": {m: dict(c) for m, c in sorted(counts.items())},
        "validations": {v.table: round(v.success_percent, 1) for v in validations},
        "samples_fused": fused,
        "costs": summarise_costs(settings.lake, run_id),
    }


# Batches fanned out to deployments wait on their child runs in threads: cap them.
FAN_OUT_THREADS: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=16)


@flow(name="braid-pipeline", task_runner=FAN_OUT_THREADS)
def pipeline(
    source: str,
    lake_path: str | None = None,
    settings_block: str | None = None,
    options: RunOptions | None = None,
    modalities: list[str] | None = None,
) -> dict[str, Any]:
    """Turn what is new under ``source`` into validated feature tables, fused per sample.

    ``modalities`` limits the run to some modalities; the others stay new for a later run.
    """
    started = time.perf_counter()
    settings = resolve_settings(settings_block, options, lake=lake_path)
    use_credentials_block(settings.aws_credentials_block)  # s3:// reads, here and in Dask workers
    run_id = str(flow_run.id or "local")
    costs = CostLog(run_id)
    with costs.measure("discover"):
        found = discover_objects(source, limits_of(settings))
    if modalities:
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; expected some of {MODALITIES}")
        found.new = [ref for ref in found.new if ref.modality in modalities]
        found.rejected = []
    summary = process(found, settings, run_id, costs)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}


@flow(name="braid-redrive", task_runner=FAN_OUT_THREADS)
def redrive(
    lake_path: str | None = None,
    stage: str | None = None,
    reason: str | None = None,
    object_id: str | None = None,
    settings_block: str | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Re-process quarantined objects (after a fix, a new limit or a new model).

    Objects that land leave quarantine; what fails again stays there with its new
    reason. An object whose bytes changed since is processed as the new object it is,
    and the old version is marked ``superseded``.
    """
    started = time.perf_counter()
    settings = resolve_settings(settings_block, options, lake=lake_path)
    use_credentials_block(settings.aws_credentials_block)  # s3:// reads, here and in Dask workers
    run_id = str(flow_run.id or "local")
    chosen = quarantined_objects(settings.lake, stage=stage, reason=reason, object_id=object_id)
    found = Discovery()
    superseded = []
    for row in chosen.iter_rows(named=True):
        try:
            size = object_size(row["uri"])
        except OSError:
            size = 0  # gone: inspect_object quarantines it again, as unreadable
        filed = inspect_object(
            found, row["uri"], size, row["sample_id"], set(), limits_of(settings)
        )
        if filed is not None and filed != row["object_id"]:
            superseded.append({**row, "status": "superseded"})
    if superseded:
        _land_superseded(settings.lake, superseded, run_id)
    summary = process(found, settings, run_id, redrive=True)
    return {
        **summary,
        "redriven": chosen.height,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _land_superseded(lake_path: str, rows: list[dict[str, Any]], run_id: str) -> None:
    now = datetime.now(UTC)
    frame = rows_frame(
        [{**r, "discovered_at": now, "flow_run_id": run_id, "landed_at": now} for r in rows],
        OBJECTS,
    )
    lake.write_part(lake_path, "objects", frame, f"{run_id}-superseded")
