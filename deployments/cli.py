"""The `braid` command line: make samples, run the pipeline, query the lake.

Heavy libraries are imported inside each command, so `braid --help` answers at once.
A failure of the command itself (bad arguments, unreadable source, unknown model)
prints one clear line and exits non-zero; bad objects never do, they go to quarantine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blocks import defaults
from deployments import local_api

POLICIES = defaults.QUALITY_POLICIES
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braid",
        description="Turn raw multimodal files into validated, fused feature tables you can query with SQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    samples = commands.add_parser(
        "samples", help="write deterministic sample data (and bad inputs)"
    )
    samples.add_argument("dir", help="folder to write the samples into")
    samples.add_argument("--n", type=_positive, default=24, help="number of samples (default 24)")
    samples.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    run = commands.add_parser("run", help="run the pipeline once over a source folder")
    run.add_argument("source", help="folder (or URL) to ingest")
    run.add_argument("--lake", help="where to land tables (default: settings block, else ./lake)")
    _processing_options(run)

    redrive = commands.add_parser(
        "redrive", help="re-process quarantined objects (after a fix, a new limit or model)"
    )
    redrive.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    redrive.add_argument("--stage", help="only objects quarantined at this stage (e.g. decode)")
    redrive.add_argument("--reason", help="only objects whose reason contains this text")
    redrive.add_argument("--object-id", help="only this object")
    _processing_options(redrive)

    quality = commands.add_parser(
        "quality", help="where the Data Docs are, and the last validations"
    )
    quality.add_argument("--lake", default="lake", help="lake folder (default ./lake)")

    up = commands.add_parser(
        "up", help="start a local Prefect server, deployments, a worker and the folder watcher"
    )
    up.add_argument("--landing", default="landing", help="folder to watch (default ./landing)")
    up.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    up.add_argument(
        "--home", default=".braid", help="state, logs and Prefect home (default ./.braid)"
    )
    up.add_argument(
        "--port", type=_positive, default=4200, help="Prefect server port (default 4200)"
    )
    up.add_argument(
        "--database-url",
        help="Prefect database, e.g. postgresql+asyncpg://user:pass@host/db (default: SQLite in --home)",
    )

    down = commands.add_parser("down", help="stop what `braid up` started")
    down.add_argument("--home", default=".braid", help="the --home given to `braid up`")

    watch = commands.add_parser(
        "watch", help="emit braid.object.created for files landing in a folder"
    )
    watch.add_argument("dir", help="folder to watch")
    watch.add_argument(
        "--settle", type=float, default=2.0, help="seconds a file must stay unchanged (default 2)"
    )
    watch.add_argument("--interval", type=float, default=0.5, help="seconds between scans")

    sql = commands.add_parser("sql", help="run SQL over the lake's tables")
    sql.add_argument("query", help='a SQL statement, e.g. "select * from objects limit 5"')
    sql.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")

    search = commands.add_parser("search", help="find the samples whose text is nearest to a query")
    search.add_argument("text", help="what to look for")
    search.add_argument("-k", type=_positive, default=5, help="how many samples (default 5)")
    search.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    search.add_argument("--text-model", help="text encoder the lake was built with")
    search.add_argument("--format", choices=("table", "csv", "json"), default="table")

    bridge = commands.add_parser(
        "bridge",
        help="re-emit storage notifications (S3, EventBridge, MinIO; HTTP or SQS) as Prefect events",
        description=(
            "Turn storage notifications into braid.object.created events on the Prefect API "
            "in PREFECT_API_URL. Without --sqs-queue-url: an HTTP endpoint, POST /events, "
            "for S3 notifications, EventBridge 'Object Created' events (an API destination) "
            "and MinIO webhooks, authenticated with a shared secret sent as "
            "'Authorization: Bearer SECRET' or 'X-Braid-Signature: sha256=HMAC_SHA256(SECRET, BODY)'. "
            "With --sqs-queue-url: consume S3 notifications (bare or through SNS) from SQS "
            "instead, deleting each message once its events are emitted; add --port to serve "
            "the HTTP endpoint as well. The secret is needed only for the HTTP endpoint."
        ),
    )
    bridge.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    bridge.add_argument(
        "--port",
        type=_port,
        help="port of the HTTP endpoint (default 8787; with --sqs-queue-url, serve HTTP too)",
    )
    bridge.add_argument(
        "--secret-block",
        metavar="NAME",
        help="Prefect Secret block holding the shared secret (default: $BRAID_BRIDGE_SECRET)",
    )
    bridge.add_argument(
        "--max-body",
        type=_positive,
        default=1024 * 1024,
        metavar="BYTES",
        help="largest notification accepted (default 1 MiB)",
    )
    bridge.add_argument("--sqs-queue-url", metavar="URL", help="SQS queue to consume")
    bridge.add_argument(
        "--sqs-consumers",
        type=_positive,
        default=4,
        metavar="N",
        help="receive loops polling the queue at once; their emits share requests (default 4)",
    )
    bridge.add_argument(
        "--aws-credentials-block",
        metavar="NAME",
        help="prefect-aws AwsCredentials block for SQS (default: boto3's usual chain, "
        "AWS_ENDPOINT_URL and AWS_DEFAULT_REGION included)",
    )
    spooling = bridge.add_mutually_exclusive_group()
    spooling.add_argument(
        "--spool",
        type=Path,
        metavar="FILE",
        help="SQLite outbox: a notification is acknowledged once its events are committed "
        "there, and a forwarder sends them to the API in batches (default: "
        "~/.cache/braid/bridge-<endpoint>.sqlite; one file per bridge process)",
    )
    spooling.add_argument(
        "--no-spool",
        action="store_true",
        help="acknowledge only once the Prefect API took the events (the bridge then runs "
        "at the API's pace)",
    )
    api = commands.add_parser(
        "api",
        help="serve the lake over a read-only HTTP API (samples, objects, search, stats)",
        description=(
            "Serve the lake read-only over HTTP while the pipeline keeps landing: "
            "GET /samples/{id}, /objects, /quarantine, /stats, POST /search, GET /health, "
            "and the OpenAPI schema at /openapi.json. Every route but /health needs "
            "'Authorization: Bearer TOKEN'."
        ),
    )
    api.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=_port, default=8788, help="port (default 8788)")
    api.add_argument(
        "--token-block",
        metavar="NAME",
        help="Prefect Secret block holding the API token (default: $BRAID_API_TOKEN)",
    )
    api.add_argument("--text-model", help="text encoder the lake was built with, for text search")

    models = commands.add_parser(
        "models", help="the model sets in the lake, with row counts; --prune removes old sets"
    )
    models.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    models.add_argument(
        "--prune",
        action="store_true",
        help="list the rows of every set but the current one (and --keep ones) for removal",
    )
    models.add_argument(
        "--keep", action="append", default=[], metavar="SET", help="a set to keep (repeatable)"
    )
    models.add_argument("--yes", action="store_true", help="with --prune: remove them")
    models.add_argument("--format", choices=("table", "csv", "json"), default="table")

    report = commands.add_parser(
        "report", help="write a self-contained HTML report of the lake (plots inline)"
    )
    report.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    report.add_argument("--out", default="report.html", help="HTML file (default report.html)")
    return parser


def _processing_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that processes objects."""
    parser.add_argument("--settings", help="name of a saved BraidSettings block to start from")
    parser.add_argument("--text-model", help="text encoder: Hugging Face id or local path")
    parser.add_argument("--image-model", help="image encoder: Hugging Face id or local path")
    parser.add_argument("--audio-model", help="audio encoder: Hugging Face id or local path")
    parser.add_argument("--batch-size", type=_positive, help="objects per batch (default 128)")
    parser.add_argument(
        "--child-batch-size",
        type=_positive,
        help="objects per child run with --fan-out deployments (default 1024)",
    )
    parser.add_argument("--dask-address", help="use an existing Dask scheduler (tcp://host:8786)")
    parser.add_argument("--dask-workers", type=_positive, help="workers of the local Dask cluster")
    parser.add_argument(
        "--fan-out",
        choices=("local", "deployments"),
        help="run batches in this run (local, the default) or as process-<modality> "
        "deployment runs on each modality's work pool (needs a server and workers, see `braid up`)",
    )
    parser.add_argument(
        "--inline-max-objects",
        type=_non_negative,
        metavar="N",
        help="a run with at most N new objects extracts them in its own process, without a "
        "Dask cluster or child runs (default 8; 0 never)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for another run writing the same lake before failing "
        "(default: wait as long as it takes; 0 fails at once)",
    )
    parser.add_argument(
        "--quality-policy",
        choices=POLICIES,
        help="what failed validation does to every table (default quarantine)",
    )
    parser.add_argument(
        "--policy-for",
        action="append",
        type=_table_policy,
        default=[],
        metavar="TABLE=POLICY",
        help="policy for one table, e.g. fused=fail (repeatable)",
    )


def _table_policy(value: str) -> tuple[str, str]:
    table, _, policy = value.partition("=")
    if policy not in POLICIES or not table:
        raise argparse.ArgumentTypeError(
            f"expected TABLE=POLICY with POLICY in {POLICIES}, got {value!r}"
        )
    return table, policy


def _processing_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """Flow parameters from the shared options; unset ones fall back to the settings block."""
    from blocks.settings import RunOptions

    options = RunOptions(
        text_model=args.text_model,
        image_model=args.image_model,
        audio_model=args.audio_model,
        batch_size=args.batch_size,
        child_batch_size=args.child_batch_size,
        dask_address=args.dask_address,
        dask_workers=args.dask_workers,
        quality_policy=args.quality_policy,
        quality_policies=dict(args.policy_for) or None,
        fan_out=args.fan_out,
        inline_max_objects=args.inline_max_objects,
        lock_timeout_s=args.lock_timeout,
    )
    return {"settings_block": args.settings, "options": options}


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, got {value}")
    return number


def cmd_samples(args: argparse.Namespace) -> None:
    from tasks.samples import make_samples

    files = make_samples(args.dir, n=args.n, seed=args.seed)
    print(f"wrote {len(files)} files for {args.n} samples (and _bad/) under {args.dir}")


def cmd_run(args: argparse.Namespace) -> None:
    from tasks.lake.storage import source_root

    try:
        source = source_root(args.source)
    except OSError as exc:
        raise CommandError(str(exc)) from exc
    started = time.perf_counter()
    # A lake without a catalog certainly has work, so the temporary API boots at once,
    # while this process checks, imports and warms up. Over an existing lake the check
    # comes first: a re-run with nothing to do then never boots a server (about 7 CPU s).
    api = None if _has_catalog(args) else local_api.start_early()
    _check_models(args)
    ahead = _pending(args, source)
    if ahead is not None and ahead.nothing:
        if api is not None:
            api.stop()
        print_summary(_nothing_to_do(args, ahead, time.perf_counter() - started))
        return
    if api is None:
        api = local_api.start_early()
    from flows.pipeline import pipeline

    if api is not None and ahead is not None:
        _warm_up(args, ahead)
    with local_api.serving(api):
        summary = pipeline(source=source, lake_path=args.lake, **_processing_parameters(args))
    print_summary(summary)


def _pending(args: argparse.Namespace, source: str) -> Any:
    """What a run would write (``tasks.ingest.plan.pending``), found before Prefect starts;
    None where only the run can tell (settings from a block, a remote source or lake)."""
    lake = args.lake or os.environ.get("BRAID_LAKE", "lake")
    if args.settings or "://" in source or "://" in lake or args.fan_out == "deployments":
        return None
    from tasks.common import Limits
    from tasks.ingest.discover import discover
    from tasks.ingest.plan import pending
    from tasks.lake.lock import is_locked
    from tasks.media.identity import resolve_model_set

    if is_locked(lake):  # another run is writing: this one waits for it and plans after
        return None
    found = discover(source, set(), Limits())
    return pending(found, lake, resolve_model_set(_models(args)))


def _has_catalog(args: argparse.Namespace) -> bool:
    from tasks.lake.store import CATALOG_FILE

    lake = args.lake or os.environ.get("BRAID_LAKE", "lake")
    return "://" not in lake and (Path(lake) / CATALOG_FILE).is_file()


def _models(args: argparse.Namespace) -> Any:
    from tasks.common import Models

    default = Models()
    return Models(
        text=args.text_model or default.text,
        image=args.image_model or default.image,
        audio=args.audio_model or default.audio,
    )


def _warm_up(args: argparse.Namespace, ahead: Any) -> None:
    """Load what the run will need while Prefect's temporary API boots in its own process:
    the models of the modalities it extracts, and Great Expectations. The run then finds
    them loaded (once per process) instead of waiting for them."""
    from data_quality.validate import prepare
    from tasks.media import registry

    registry.warm(sorted(ahead.extract), _models(args))
    prepare()


def _nothing_to_do(args: argparse.Namespace, ahead: Any, seconds: float) -> dict[str, Any]:
    """The summary of a run that found nothing to do, and so started no flow run."""
    print("nothing new or stale: the lake already holds every row this source makes")
    lake = args.lake or os.environ.get("BRAID_LAKE", "lake")
    catalog = Path(lake) / "braid.duckdb"
    return {
        "flow_run_id": None, "lake": lake, "catalog": str(catalog), "quality_docs": None,
        "new": 0, "known": ahead.known, "duplicates": ahead.duplicates, "model_set": None,
        "modalities": {}, "validations": {}, "samples_fused": 0, "costs": {},
        "seconds": round(seconds, 2),
    }  # fmt: skip


def cmd_redrive(args: argparse.Namespace) -> None:
    from tasks.lake.query import connect

    try:
        connect(args.lake).close()
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    api = local_api.start_early()  # boots while the pipeline imports
    _check_models(args)
    from flows.pipeline import redrive

    with local_api.serving(api):
        summary = redrive(
            lake_path=args.lake,
            stage=args.stage,
            reason=args.reason,
            object_id=args.object_id,
            **_processing_parameters(args),
        )
    print(f"redriving {summary['redriven']} quarantined objects")
    print_summary(summary)


def cmd_quality(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tasks.lake.query import last_validations

    try:
        frame = last_validations(args.lake)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    docs = Path(args.lake).resolve() / "_quality" / "docs" / "index.html"
    print(
        f"Data Docs: {docs}" if docs.exists() else "Data Docs: none yet (no run has validated data)"
    )
    print_frame(frame, "table")


def _check_models(args: argparse.Namespace) -> None:
    """Fail before any work when a configured model cannot be found."""
    from tasks.media.encoders import embedding_dim

    for kind in ("text", "image", "audio"):
        model = getattr(args, f"{kind}_model")
        if model:
            try:
                embedding_dim(model, kind)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"{'modality':<12}{'landed':>8}{'quarantined':>13}")
    landed = quarantined = 0
    for modality, counts in summary["modalities"].items():
        landed += counts.get("landed", 0)
        quarantined += counts.get("quarantined", 0)
        print(f"{modality:<12}{counts.get('landed', 0):>8}{counts.get('quarantined', 0):>13}")
    print(f"{'total':<12}{landed:>8}{quarantined:>13}")
    if summary.get("costs"):
        stages = ("discover", "decode", "embed", "validate", "land", "fuse")
        order = sorted(summary["costs"], key=lambda s: stages.index(s) if s in stages else 99)
        parts = []
        for stage in order:
            cost = summary["costs"][stage]
            each = cost["cpu_s_per_object"]
            parts.append(
                f"{stage} {cost['cpu_s']:.2f}" + (f" ({each * 1000:.0f} ms/object)" if each else "")
            )
        print("\ncpu-seconds: " + ", ".join(parts))
    if summary["validations"]:
        checks = ", ".join(f"{t} {p:g}%" for t, p in summary["validations"].items())
        print(f"\nexpectations met: {checks}")
        print(f"data docs: {summary['quality_docs']}")
    print(
        f"\n{summary['new']} new objects, {summary['known']} already in the lake, "
        f"{summary['duplicates']} duplicate copies; {summary['samples_fused']} samples fused "
        f"in {summary['seconds']:.1f} s"
    )
    print(f"lake: {summary['lake']}  catalog: {summary['catalog']}")


def cmd_up(args: argparse.Namespace) -> None:
    import signal
    import threading
    from pathlib import Path

    from deployments.up import Stack, stop, up

    stack = Stack(
        home=Path(args.home).resolve(),
        landing=Path(args.landing).resolve(),
        lake=Path(args.lake).resolve(),
        port=args.port,
        database_url=args.database_url,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(f"starting the Braid stack (logs in {stack.home / 'logs'}) …", flush=True)
    try:
        started = up(stack)
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"Prefect UI: {stack.ui_url}", flush=True)
    print(f"drop files into {stack.landing}; features land in {stack.lake}", flush=True)
    print("Ctrl-C (or `braid down`) stops everything", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop(started)
        (stack.home / "up.json").unlink(missing_ok=True)
        print("stopped", flush=True)


def cmd_down(args: argparse.Namespace) -> None:
    from pathlib import Path

    from deployments.up import down

    try:
        stopped = down(Path(args.home).resolve())
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")


def cmd_watch(args: argparse.Namespace) -> None:
    import logging
    from pathlib import Path

    from deployments.events import emit_object_created
    from deployments.watch import FolderWatcher

    folder = Path(args.dir)
    if not folder.is_dir():
        raise CommandError(f"{args.dir!r} is not a folder")
    if not os.environ.get("PREFECT_API_URL"):
        raise CommandError(
            "PREFECT_API_URL is not set: events need a Prefect server (see `braid up`)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"watching {folder.resolve()} (settle {args.settle:g} s)", flush=True)
    FolderWatcher(folder, emit_object_created, settle=args.settle).run(args.interval)


def cmd_sql(args: argparse.Namespace) -> None:
    import duckdb

    from tasks.lake.query import run_sql

    try:
        frame = run_sql(args.lake, args.query)
    except (duckdb.Error, FileNotFoundError) as exc:
        raise CommandError(str(exc).splitlines()[0]) from exc
    print_frame(frame, args.format)


def cmd_search(args: argparse.Namespace) -> None:
    from tasks.lake.query import current_text_model
    from tasks.media.encoders import DEFAULT_TEXT_MODEL
    from tasks.serve.serving import search_text

    try:
        # By default, the text model of the lake's current model set.
        model = args.text_model or current_text_model(args.lake) or DEFAULT_TEXT_MODEL
        frame = search_text(args.lake, args.text, args.k, model)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    print_frame(frame, args.format)


def cmd_api(args: argparse.Namespace) -> None:
    import signal
    from pathlib import Path

    from deployments import api
    from tasks.media.encoders import DEFAULT_TEXT_MODEL

    try:
        token = api.load_token(args.token_block)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    app = api.make_app(args.lake, token, text_model=args.text_model or DEFAULT_TEXT_MODEL)
    if not (Path(args.lake) / "objects").is_dir():
        print(f"braid api: no lake at {args.lake} yet; data routes answer 503 until one lands")
    # SIGTERM (docker stop, systemd) ends the server cleanly, exit status 0: uvicorn finishes
    # its requests, then passes the signal on to this handler.
    signal.signal(signal.SIGTERM, lambda *_: None)
    print(f"braid api: http://{args.host}:{args.port} over {Path(args.lake).resolve()}", flush=True)
    api.serve(app, args.host, args.port)


def cmd_models(args: argparse.Namespace) -> None:
    from tasks.lake.lock import lake_lock
    from tasks.lake.models import model_sets, prune

    try:
        sets = model_sets(args.lake)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    print_frame(sets, args.format)
    if not args.prune:
        return
    keep = set(args.keep) | set(sets.filter(sets["current"])["model_set"].to_list())
    with lake_lock(args.lake, "braid-models-prune", timeout_s=0):
        removed = prune(args.lake, keep, apply=args.yes)
    what = ", ".join(f"{table}: {n}" for table, n in sorted(removed.items())) or "nothing"
    if args.yes:
        print(f"pruned rows of sets other than {sorted(keep)}: {what}")
    else:
        print(f"would prune rows of sets other than {sorted(keep)}: {what} (add --yes to remove)")


def cmd_report(args: argparse.Namespace) -> None:
    from tasks.serve.report import build_report

    try:
        out = build_report(args.lake, args.out)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {out}")


def cmd_bridge(args: argparse.Namespace) -> None:
    import logging
    import signal
    import threading

    from deployments import bridge
    from deployments.events import emit_objects_created
    from deployments.spool import Spool

    serve_http = args.sqs_queue_url is None or args.port is not None
    port = args.port or bridge.DEFAULT_PORT
    secret = None
    if serve_http:
        try:
            secret = bridge.load_secret(args.secret_block)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    client = None
    if args.sqs_queue_url:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = bridge.sqs_client(args.aws_credentials_block)
            client.get_queue_attributes(QueueUrl=args.sqs_queue_url, AttributeNames=["QueueArn"])
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise CommandError(f"cannot use SQS queue {args.sqs_queue_url}: {exc}") from exc
    from prefect.settings import PREFECT_API_URL

    spool = None if args.no_spool else Spool(args.spool or default_spool(args, serve_http, port))
    emit = emit_objects_created if spool is None else spool.put
    app = None
    if secret is not None:
        try:
            app = bridge.make_app(secret, emit, args.max_body)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"braid bridge: emitting to {PREFECT_API_URL.value() or 'a temporary local Prefect API'}")
    stop = threading.Event()
    # SIGTERM (docker stop, ECS, systemd) ends the bridge cleanly, exit status 0: uvicorn
    # finishes its requests and then passes the signal on to this handler; the SQS loop
    # ends after its current poll. Ctrl-C ends it too, reported as an interrupt.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def consume() -> None:
        bridge.consume_sqs(args.sqs_queue_url, emit, client=client, stop=stop)

    # Several receive loops: one loop waits on each receive, emit and delete in turn, so
    # its rate is one receive's worth (10 messages) per round trip; boto3's clients are
    # thread-safe and the loops' emits go to the API together.
    consumers = [
        threading.Thread(target=consume, name=f"braid-sqs-{i}", daemon=True)
        for i in range(args.sqs_consumers if client is not None else 0)
    ]
    if spool is not None:
        spool.start()
        print(f"braid bridge: acknowledging once queued in {spool.path}", flush=True)
    if consumers:
        print(f"braid bridge: consuming {args.sqs_queue_url} ({len(consumers)} loops)", flush=True)
    for consumer in consumers:
        consumer.start()
    try:
        if app is None:
            while any(c.is_alive() for c in consumers):
                stop.wait(0.5)
            return
        print(f"braid bridge: POST http://{args.host}:{port}/events", flush=True)
        bridge.serve(app, args.host, port)
    finally:
        stop.set()
        for consumer in consumers:
            consumer.join(timeout=30)
        if spool is not None:
            spool.close()


def default_spool(args: argparse.Namespace, serve_http: bool, port: int) -> Path:
    """One outbox per bridge process, named after what it serves."""
    import hashlib

    parts = [f"http-{port}"] if serve_http else []
    if args.sqs_queue_url:
        parts.append("sqs-" + hashlib.sha256(args.sqs_queue_url.encode()).hexdigest()[:12])
    return Path.home() / ".cache" / "braid" / f"bridge-{'-'.join(parts)}.sqlite"


def print_frame(frame: Any, fmt: str) -> None:
    import polars as pl

    if fmt == "csv":
        flat = frame.with_columns(
            pl.col(c).cast(pl.List(pl.String)).list.join(";")
            for c, dtype in frame.schema.items()
            if isinstance(dtype, pl.List | pl.Array)
        )
        sys.stdout.write(flat.write_csv())
    elif fmt == "json":
        print(json.dumps(frame.to_dicts(), default=str, indent=2))
    else:
        with pl.Config(tbl_rows=100, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=200):
            print(frame)


COMMANDS = {
    "samples": cmd_samples,
    "run": cmd_run,
    "redrive": cmd_redrive,
    "quality": cmd_quality,
    "up": cmd_up,
    "down": cmd_down,
    "watch": cmd_watch,
    "sql": cmd_sql,
    "search": cmd_search,
    "bridge": cmd_bridge,
    "api": cmd_api,
    "report": cmd_report,
    "models": cmd_models,
}


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except CommandError as exc:
        print(f"braid {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"braid {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"braid {args.command}: error: {_explain(exc)}", file=sys.stderr)
        return 1
    return 0


def _explain(exc: Exception) -> str:
    """One line for a failed command; a lost Prefect API says which and what it means."""
    text = f"{type(exc).__name__}: {exc}"
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or "the Prefect API"
        return (
            f"lost the Prefect API at {url} ({text}) and gave up after the client's retries "
            "(PREFECT_CLIENT_MAX_RETRIES); what had landed is kept, and the next run "
            "completes the rest"
        )
    return text


# Commands whose process holds torch, transformers and Great Expectations: tearing those
# modules down at exit costs seconds (about 3.5 s measured) and does nothing for the user.
FAST_EXIT = frozenset({"run", "redrive"})


def entry(argv: Sequence[str] | None = None) -> None:
    """The ``braid`` command: ``main``, then, after a run, a prompt exit.

    The exit handlers run (Prefect's log and event workers flush, temporary directories
    go), the output is flushed, and the process ends without unloading every module one
    by one. ``main`` itself never exits the process, so tests call it in-process.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    code = main(argv)
    if argv and argv[0] in FAST_EXIT:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
