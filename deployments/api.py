"""`braid api`: a read-only HTTP API over the lake, so services can use Braid's results.

FastAPI puts HTTP, validation and an OpenAPI schema around the plain query functions
of ``tasks/serving.py``; uvicorn serves it. The lake is only read, through an in-memory
DuckDB whose views are rebuilt when new parts land, so the pipeline keeps landing while
the API serves. Every route but ``GET /health`` needs ``Authorization: Bearer <token>``;
every error answers ``{"error": ...}`` with a 4xx status (503 while there is no lake).
"""

import hmac
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, cast

import polars as pl
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import paging
from deployments.reader import LakeReader
from deployments.secrets import load_secret
from tasks.common import MODALITIES
from tasks.lake.tables import FUSED, TABLES, feature_table
from tasks.media.encoders import DEFAULT_TEXT_MODEL
from tasks.serve import serving

logger = logging.getLogger("braid.api")

DEFAULT_PORT = 8788
TOKEN_ENV = "BRAID_API_TOKEN"
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_OFFSET = 1_000_000_000
MAX_K = 100
DEFAULT_K = 10
MAX_TEXT_CHARS = 4096
MAX_ID_CHARS = 1024
MAX_BODY = 64 * 1024
OPEN_PATHS = frozenset({"/health"})

Modality = Literal[MODALITIES]  # type: ignore[valid-type]
# Objects the pipeline could not sniff are filed under "unknown"; fused rows that
# failed validation are quarantined under "fused".
ObjectModality = Literal[(*MODALITIES, "unknown")]  # type: ignore[valid-type]
QuarantineModality = Literal[(*MODALITIES, "unknown", "fused")]  # type: ignore[valid-type]
Status = Literal["landed", "quarantined", "superseded"]


# --- response and request models ---------------------------------------------------------------


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """What every error answers: a one-line ``error``, and for invalid input each problem."""

    error: str
    detail: list[ErrorDetail] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    lake: Literal["ready", "missing"]


class ObjectRow(BaseModel):
    object_id: str
    uri: str | None = None
    sample_id: str | None = None
    modality: str | None = None
    media_type: str | None = None
    size_bytes: int | None = None
    status: str | None = Field(None, description="landed, quarantined or superseded")
    discovered_at: datetime | None = None
    landed_at: datetime | None = None
    flow_run_id: str | None = None


class QuarantineRow(BaseModel):
    object_id: str
    uri: str | None = None
    sample_id: str | None = None
    modality: str | None = None
    stage: str | None = None
    reason: str | None = None
    quarantined_at: datetime | None = None
    flow_run_id: str | None = None
    landed_at: datetime | None = None


class ObjectPage(BaseModel):
    items: list[ObjectRow]
    total: int = Field(description="rows matching the filters, over all pages")
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class QuarantinePage(BaseModel):
    items: list[QuarantineRow]
    total: int = Field(description="rows matching the filters, over all pages")
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


def _python_type(dtype: pl.DataType) -> Any:
    """The Python type a column's values arrive as in JSON answers."""
    if isinstance(dtype, pl.List | pl.Array):
        return list[_python_type(cast(pl.DataType, dtype.inner))]  # type: ignore[misc]
    if dtype.is_integer():
        return int
    if dtype.is_float():
        return float
    if isinstance(dtype, pl.Boolean):
        return bool
    if isinstance(dtype, pl.Datetime):
        return datetime
    if isinstance(dtype, pl.Date):
        return date
    if isinstance(dtype, pl.String):
        return str
    return Any


def _row_model(name: str, schema: dict[str, pl.DataType], doc: str) -> type[BaseModel]:
    """A response model with a table contract's columns, each nullable (Parquet columns are)."""
    fields: dict[str, Any] = {}
    for column, dtype in schema.items():
        description = "only with ?vectors=true" if serving.is_vector(column) else None
        fields[column] = (_python_type(dtype) | None, Field(None, description=description))
    return create_model(name, __doc__=doc, __config__=ConfigDict(protected_namespaces=()), **fields)


FEATURE_MODELS = {
    m: _row_model(
        f"{m.capitalize()}Features",
        TABLES[feature_table(m)].schema,
        f"One {m} object's features from one model (raw vectors only with ?vectors=true).",
    )
    for m in MODALITIES
    if feature_table(m) in TABLES
}
Features = create_model(
    "Features",
    __doc__="A sample's feature rows per modality.",
    **{m: (list[model], Field(default_factory=list)) for m, model in FEATURE_MODELS.items()},  # type: ignore[valid-type, call-overload]
)
FusedRow = _row_model(
    "FusedRow",
    FUSED,
    "A sample's fused row: presence flags, modalities, lineage (vectors only with ?vectors=true).",
)


class SampleDetail(BaseModel):
    sample_id: str
    objects: list[ObjectRow]
    features: Features  # type: ignore[valid-type]
    fused: FusedRow | None  # type: ignore[valid-type]
    quarantine: list[QuarantineRow]


def _utf8(value: str | None) -> str | None:
    # JSON can spell lone surrogates ("\ud800"); they are not text and DuckDB refuses them.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


class SearchRequest(BaseModel):
    """Exactly one of ``text`` and ``sample_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["sample_id"]}]},
    )

    text: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="find the samples whose texts are nearest to this (embedded with the lake's text model)",
    )
    sample_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="find the samples whose fused embeddings are nearest to this sample's",
    )
    modality: Modality | None = Field(None, description="only samples that hold this modality")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, strict=True, description="how many samples")

    _check_text = field_validator("text", "sample_id")(_utf8)

    @model_validator(mode="after")
    def _one_query(self) -> "SearchRequest":
        if (self.text is None) == (self.sample_id is None):
            raise ValueError("give exactly one of text and sample_id")
        return self


class SearchHit(BaseModel):
    sample_id: str
    score: float | None = Field(description="cosine similarity, 1 is identical")
    modalities: list[str] | None = None
    text: str | None = Field(None, description="the best-matching text's preview (text search)")


class SearchResponse(BaseModel):
    by: Literal["text", "sample_id"]
    model_id: str | None = Field(description="the text model (text search)")
    hits: list[SearchHit]


class Totals(BaseModel):
    objects: int
    landed: int
    quarantined: int
    samples: int
    samples_fused: int


class ModalityStatusCount(BaseModel):
    modality: str | None
    status: str | None
    count: int


class DayCount(BaseModel):
    day: date | None = Field(description="UTC day the objects were discovered")
    modality: str | None
    status: str | None
    count: int


class StageCount(BaseModel):
    stage: str | None
    count: int


class RunSummary(BaseModel):
    flow_run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    objects: int
    landed: int
    quarantined: int
    samples_fused: int


class Stats(BaseModel):
    totals: Totals
    by_modality_status: list[ModalityStatusCount]
    by_day: list[DayCount]
    quarantine_by_stage: list[StageCount]
    runs: list[RunSummary] = Field(description="the last runs, newest first")


# --- auth and errors ---------------------------------------------------------------------------


def load_token(block_name: str | None = None) -> str:
    """The API token: the ``Secret`` block named ``block_name``, else $BRAID_API_TOKEN."""
    return load_secret(block_name, TOKEN_ENV, "API token", "--token-block")


def bearer_matches(token: str, authorization: str) -> bool:
    """Whether an Authorization header value is ``Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    # Header values arrive decoded as latin-1; encoding them back gives the bytes as sent.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token.encode("utf-8")
    )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Guard:
    """ASGI middleware: bearer auth before anything else (routing, body parsing), and a body limit.

    Checking here, not in a route dependency, means an unauthenticated client learns
    nothing: not which paths exist, not how a body is validated.
    """

    def __init__(self, app: Any, token: str, max_body: int = MAX_BODY) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not bearer_matches(self.token, headers.get("authorization", "")):
            await _error(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        # Read the body here, up to the limit, and hand it on: a chunked body has no length.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _error(413, f"body over {self.max_body} bytes")(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _error(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    summary = f"{where}: {first['msg']}" if where else str(first["msg"])
    return JSONResponse({"error": summary, "detail": detail}, status_code=422)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def _no_lake(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, str(exc), {"Retry-After": "30"})


def _internal(request: Request, exc: Exception) -> JSONResponse:
    import duckdb

    if isinstance(exc, duckdb.IOException):  # a part replaced under a query: the next one sees it
        logger.warning("lake changed under a query: %s", exc)
        return _error(503, "the lake changed while reading it; retry", {"Retry-After": "1"})
    logger.exception("internal error on %s %s", request.method, request.url.path)
    return _error(500, "internal error")


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "a cursor not handed out, both cursor and offset, or a body that is not UTF-8",
        401: "missing or invalid bearer token",
        404: "unknown sample",
        413: "body too large",
        422: "invalid parameters or body",
        503: "no lake yet, or the text model is unavailable",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


# --- the app ------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    """Naive times are UTC; aware ones are converted to it."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("time out of range") from exc


Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"rows per page (at most {MAX_LIMIT})")
]
Offset = Annotated[
    int | None,
    Query(ge=0, le=MAX_OFFSET, description="rows to skip (instead of cursor)"),
]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="next_cursor of the previous page (instead of offset)",
    ),
]
Since = Annotated[
    datetime | None,
    Query(description="only rows landed at or after this time (ISO 8601; naive means UTC)"),
    AfterValidator(_utc),
]


def _page_request(limit: int, offset: int | None, cursor: str | None) -> paging.PageRequest:
    if offset is not None and cursor is not None:
        raise HTTPException(400, "give cursor or offset, not both")
    if cursor is not None:
        try:
            paging.decode_cursor(cursor)
        except paging.CursorError as exc:
            raise HTTPException(400, str(exc)) from exc
    return paging.PageRequest(limit=limit, offset=offset or 0, cursor=cursor)


def make_app(
    lake: str,
    token: str,
    text_model: str = DEFAULT_TEXT_MODEL,
    check_every: float = 1.0,
    warm_up: bool = True,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """The API over ``lake``, guarded by ``token``.

    ``check_every`` bounds how stale an answer can be (seconds between looks for new
    parts); ``warm_up`` loads the text model in the background at startup, so the first
    text search does not wait for it.
    """
    if not token:
        raise ValueError("the API needs a non-empty token")
    reader = LakeReader(lake, check_every=check_every)

    def embed(text: str) -> list[float]:
        from tasks.media.encoders import embed_texts

        try:
            return [float(x) for x in embed_texts([text], text_model)[0]]
        except (OSError, ValueError) as exc:
            raise HTTPException(503, f"text model {text_model!r} unavailable: {exc}") from exc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if warm_up:

            def load() -> None:
                try:
                    embed("warm up")
                except Exception as exc:  # searches will report it
                    logger.warning("could not load text model %s: %s", text_model, exc)

            threading.Thread(target=load, name="braid-api-warm-up", daemon=True).start()
        yield

    app = FastAPI(
        title="Braid",
        summary="Read-only access to Braid's lake: samples, objects, quarantine, similarity search.",
        version="1",
        docs_url=None,  # the docs pages could not fetch the schema without the token
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(Guard, token=token, max_body=max_body)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(FileNotFoundError, _no_lake)
    app.add_exception_handler(Exception, _internal)

    bearer = HTTPBearer(auto_error=False, description=f"the token of `braid api` (${TOKEN_ENV})")

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        # The Guard already refused anything else; this declares the scheme in the schema.
        if credentials is None or not bearer_matches(
            token, f"{credentials.scheme} {credentials.credentials}"
        ):
            raise HTTPException(
                401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"}
            )

    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> dict[str, str]:
        """Liveness, no token needed; ``lake`` says whether there is a lake to serve yet."""
        return {"status": "ok", "lake": "ready" if reader.ready() else "missing"}

    api = APIRouter(
        dependencies=[Depends(authorized)],
        responses=_error_responses(401, 422, 503),
    )

    @api.get(
        "/samples/{sample_id:path}",
        response_model=SampleDetail,
        response_model_exclude_unset=True,  # raw vectors are absent, not null, unless asked
        responses=_error_responses(404),
        tags=["samples"],
    )
    def get_sample(
        sample_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
        vectors: Annotated[bool, Query(description="include raw embeddings")] = False,
    ) -> dict[str, Any]:
        """A sample's objects, its features per modality, its fused row and its quarantined objects."""
        with reader.connection() as con:
            detail = serving.sample_detail(con, sample_id, vectors=vectors)
        if detail is None:
            raise HTTPException(404, f"no sample {sample_id!r}")
        return detail

    @api.get(
        "/objects",
        response_model=ObjectPage,
        responses=_error_responses(400),
        tags=["objects"],
    )
    def list_objects(
        modality: Annotated[ObjectModality | None, Query()] = None,
        status: Annotated[Status | None, Query()] = None,
        since: Since = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Objects in ``object_id`` order, a page at a time."""
        page = _page_request(limit, offset, cursor)
        with reader.connection() as con:
            return paging.objects_page(con, modality, status, since, page)

    @api.get(
        "/quarantine",
        response_model=QuarantinePage,
        responses=_error_responses(400),
        tags=["objects"],
    )
    def list_quarantine(
        stage: Annotated[
            str | None,
            Query(max_length=64, description="e.g. discover, sniff, read, decode, embed, validate"),
        ] = None,
        reason: Annotated[
            str | None,
            Query(max_length=300, description="text the reason contains (any case)"),
        ] = None,
        modality: Annotated[QuarantineModality | None, Query()] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = None,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Objects now in quarantine, with the stage that refused them and why."""
        page = _page_request(limit, offset, cursor)
        with reader.connection() as con:
            return paging.quarantine_page(con, stage, reason, modality, page)

    @api.post(
        "/search",
        response_model=SearchResponse,
        responses=_error_responses(400, 404, 413),
        tags=["samples"],
    )
    def search(request: SearchRequest) -> dict[str, Any]:
        """The samples nearest to a text, or to another sample, by cosine similarity."""
        if request.text is not None:
            vector = embed(request.text)
            with reader.connection(vectors=True) as con:
                hits = serving.samples_near_text(
                    con, vector, text_model, request.k, request.modality
                )
            return {"by": "text", "model_id": text_model, "hits": hits}
        sample_id = request.sample_id
        assert sample_id is not None  # SearchRequest holds exactly one of text and sample_id
        with reader.connection(vectors=True) as con:
            found = serving.similar_samples(con, sample_id, request.k, request.modality)
            if found is None and serving.sample_exists(con, sample_id):
                raise HTTPException(404, f"sample {sample_id!r} has no fused embedding")
        if found is None:
            raise HTTPException(404, f"no sample {request.sample_id!r}")
        return {"by": "sample_id", "model_id": None, "hits": found}

    @api.get("/stats", response_model=Stats, tags=["stats"])
    def stats(
        runs: Annotated[int, Query(ge=1, le=100, description="how many recent runs")] = 10,
    ) -> dict[str, Any]:
        """Counts per modality, status and day, quarantine per stage, and the last runs."""
        with reader.connection() as con:
            return serving.lake_stats(con, runs=runs)

    app.include_router(api)
    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` with uvicorn until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, server_header=False, timeout_keep_alive=5)
    ).run()
