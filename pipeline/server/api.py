"""The FastAPI application: routes, auth, JSON errors and the OpenAPI document.

Why FastAPI (over Flask): the OpenAPI document is generated from the same
route signatures and response models that produce the responses, so it stays
true by construction (and a test checks the running server against it);
multipart parsing spools uploads to disk instead of memory; and it runs on
uvicorn, a production ASGI server, without a WSGI bridge. Endpoints are plain
`def` functions: FastAPI runs them in its thread pool, which is what the
decode/LBP work wants (it releases the GIL in OpenCV and NumPy).

Every error is JSON: ``{"error": "<code>", "message": "<one line>"}``, plus
``result`` (the `rejected` result object) for a refused query photo and
``failed`` (per-file refusals) for a refused registration.
"""

from __future__ import annotations

import hmac
import time
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

import structlog
from fastapi import Body, Depends, FastAPI, File, Form, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.catalog import CatalogEntry
from pipeline.config import Config
from pipeline.history import Filters, parse_since
from pipeline.i18n import pick_language, render_page
from pipeline.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pipeline.results import load_schema
from pipeline.server.service import INTAKE_STATUS, ServiceError, TeaprintService, Upload, iso_time

log = structlog.get_logger("teaprint.http")

VERSION = "1"
STATIC = Path(__file__).resolve().parent / "static"
ID_PATTERN = r"^[0-9a-f]{16}$"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
MAX_PAGE = 500

_MATCH_RESULT = {"$ref": "#/components/schemas/MatchResult"}
_CAKE_RECORD = {"$ref": "#/components/schemas/CakeRecord"}
# Module level: annotations are strings here (PEP 563) and FastAPI resolves them in these globals.
EntryId = Annotated[str, PathParam(pattern=ID_PATTERN, description="Entry id: 16 hex digits.")]


# ---------------------------------------------------------------- models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Entry(_Model):
    """One registered photo."""

    id: str = Field(pattern=ID_PATTERN, description="First 16 hex digits of the photo's sha256.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    label: str
    path: str = Field(description="Where the photo is stored on the server.")
    added_at: str = Field(description="When it was registered (ISO 8601, UTC).")
    model_id: str
    image_url: str = Field(description="A JPEG thumbnail of the photo (needs the token).")


class EntryPage(_Model):
    total: int = Field(ge=0, description="Entries matching the filter.")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    items: list[Entry]
    next: str | None = Field(description="URL of the next page; null on the last.")


class Failure(_Model):
    file: str = Field(description="The uploaded file's name (display only).")
    error: str = Field(description="Refusal code, e.g. truncated, not_an_image, too_large_file, bad_label.")
    message: str


class RegisterResponse(_Model):
    added: list[Entry]
    duplicates: list[Entry] = Field(description="Photos whose bytes were already registered (the existing entries).")
    failed: list[Failure]
    catalog_size: int


class DeleteResponse(_Model):
    removed: Entry
    moved_to: str | None = Field(description="File name under <state>/deleted/ the photo was moved to; null if it lay outside the catalog folder.")


class Health(_Model):
    status: Literal["ok"]
    auth_required: bool
    version: str


class ServerStatus(_Model):
    """`Engine.status`, the document `teaprint status --json` prints, plus this server's section."""

    root: str
    entries: int
    labels: int
    index: dict[str, Any]
    model: dict[str, Any]
    model_matches_index: bool
    features_match_index: bool = Field(description="The catalog's descriptors were computed with the loaded feature settings "
                                       "(locator, canonical size, LBP, keypoints); false: run `teaprint reembed`.")
    daemon: dict[str, Any] = Field(description="The drop-folder daemon on the same root, as `teaprint status` shows it.")
    records: dict[str, Any] = Field(description="Cakes with a record, and the problems of the record files (cakes, problem_count, problems).")
    history: dict[str, Any] | None = Field(description="The history of checks: path, ok, pending (checks waiting to be written), error.")
    metrics: dict[str, Any] = Field(description="A summary of GET /metrics: queries by status, failed files, backlog, catalog, stage_ms.")
    server: dict[str, Any]


class Check(_Model):
    """One answered query in the history of checks."""

    key: str = Field(description="The answer's idempotency key (one row per answer).")
    at: str = Field(description="When it was answered (the result's created_at, ISO 8601 UTC).")
    source: Literal["folder", "cli", "http"]
    query: str = Field(description="The query photo's name.")
    sha256: str | None
    status: Literal["matched", "no_match", "rejected"]
    label: str | None
    confidence: float
    result_path: str | None = Field(description="The result JSON written for it (drop folder only).")
    error_code: str | None


class CheckPage(_Model):
    total: int = Field(ge=0, description="Checks matching the filters.")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    items: list[Check] = Field(description="Newest first.")
    next: str | None = Field(description="URL of the next page; null on the last.")


class ErrorBody(_Model):
    error: str = Field(description="Short machine-readable code.")
    message: str = Field(description="One human-readable line.")
    result: Annotated[dict[str, Any] | None, WithJsonSchema({"anyOf": [_MATCH_RESULT, {"type": "null"}]})] = Field(
        default=None, description="POST /match: the `rejected` result object for a refused photo."
    )
    failed: list[Failure] | None = Field(default=None, description="POST /catalog: why each photo was refused.")
    problems: list[dict[str, Any]] | None = Field(
        default=None, description="PUT /records/{label}: each refused field (source, code, message, label, line, field).")


_ERROR_TEXT = {
    400: "Invalid request (missing field, bad parameter, bad label).",
    401: "Missing or wrong bearer token.",
    403: "Host or Origin not allowed.",
    404: "No such entry or record.",
    413: "Request body, file or image above a limit.",
    415: "Not an image, or an unsupported image type.",
    422: "An image that cannot be used (empty, truncated, unreadable).",
    500: "Server failure (never caused by a bad file).",
    503: "The history of checks cannot be read now (locked or broken database); matching goes on.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in (*codes, 403, 500)}


def entry_json(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "sha256": entry.sha256,
        "label": entry.label,
        "path": entry.path,
        "added_at": iso_time(entry.added_at),
        "model_id": entry.model_id,
        "image_url": f"/catalog/{entry.id}/image",
    }


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


# ---------------------------------------------------------------- the app
def create_app(service: TeaprintService, config: Config, token: str | None) -> FastAPI:
    """The application; `token` None means no auth (the caller binds to loopback only)."""
    app = FastAPI(
        title="teaprint",
        version=VERSION,
        description=(
            "Register tea-cake photos and identify a cake from a photo. Same engine, catalog and "
            "result object (`MatchResult`, pipeline/data/result.schema.json) as the drop-folder daemon. "
            "Send `Authorization: Bearer <token>` on every call but /health."
        ),
        docs_url=None,
        redoc_url=None,
    )
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    bearer = HTTPBearer(auto_error=False, description="The token from http.token or TEAPRINT_TOKEN.")
    expected = token.encode() if token else None

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ServiceError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")

    auth = [Depends(require_token)]

    # ------------------------------------------------------------ guards and logging
    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        host = request.headers.get("host", "")
        if expected is None and _hostname(host) not in LOOPBACK_NAMES:
            # Without a token the server listens on loopback only; refusing other
            # Host names also stops DNS-rebinding pages from reaching it.
            response: Response = error_response(403, "host_not_allowed", f"Host {host!r} is not a loopback name; configure a token to serve others")
        elif request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request.headers.get("origin"), host):
            # A cross-site page could POST a form here; browsers send its Origin.
            response = error_response(403, "origin_not_allowed", f"Origin {request.headers.get('origin')!r} is not this server")
        else:
            response = await call_next(request)
        level = log.debug if request.url.path == "/health" else log.info
        level("request", method=request.method, path=request.url.path, status=response.status_code,
              ms=round((time.perf_counter() - started) * 1e3, 1))
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return error_response(err.status, err.code, err.message, headers=headers, **err.extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for item in err.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("internal_error", method=request.method, path=request.url.path, error=repr(err), exc_info=err)
        return error_response(500, "internal", "internal server error; the server log has the details")

    # ------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    def index_page(request: Request) -> Response:
        language = pick_language(request.headers.get("accept-language"))
        return HTMLResponse(render_page(page, language), headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                           "Content-Language": language, "Vary": "Accept-Language",
                                           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                           "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                           "connect-src 'self'; frame-ancestors 'none'"})

    @app.get("/health", response_model=Health, responses=_errors(), tags=["server"], summary="Liveness (no token needed)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "auth_required": expected is not None, "version": VERSION}

    @app.get("/status", response_model=ServerStatus, dependencies=auth, responses=_errors(401), tags=["server"],
             summary="Catalog, model, daemon and server state")
    def status() -> dict[str, Any]:
        return service.status()

    @app.post(
        "/catalog", status_code=201, response_model=RegisterResponse, dependencies=auth, tags=["catalog"],
        summary="Register one or many photos",
        responses={200: {"model": RegisterResponse, "description": "Nothing new: every photo was already registered."},
                   **_errors(400, 401, 413, 415, 422)},
    )
    def register(
        files: Annotated[list[UploadFile], File(description="One or many photos (repeat the field).")],
        label: Annotated[str | None, Form(description="Label for all photos; otherwise each file name's text before the first '-'.")] = None,
    ) -> Response:
        limit = config.http.max_files
        if len(files) > limit:
            raise ServiceError(400, "too_many_files", f"{len(files)} files in one request; at most {limit} (http.max_files)")
        report = service.register([Upload(f.file, f.filename) for f in files], label)
        body = {
            "added": [entry_json(e) for e in report.added],
            "duplicates": [entry_json(e) for e in report.duplicates],
            "failed": report.failed,
            "catalog_size": report.catalog_size,
        }
        if report.added:
            return JSONResponse(body, status_code=201)
        if report.duplicates:
            return JSONResponse(body, status_code=200)
        codes = {f["error"] for f in report.failed}
        status_code = INTAKE_STATUS.get(next(iter(codes)), 422) if len(codes) == 1 else 422
        if codes == {"bad_label"}:
            status_code = 400
        first = report.failed[0]
        return error_response(status_code, first["error"] if len(codes) == 1 else "all_refused",
                              f"no photo registered: {first['message']}", failed=report.failed)

    @app.get("/catalog", response_model=EntryPage, dependencies=auth, responses=_errors(400, 401), tags=["catalog"],
             summary="List entries, oldest first, a page at a time")
    def list_catalog(
        offset: Annotated[int, Query(ge=0, description="Entries to skip.")] = 0,
        limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Page size (default http.page_size).")] = None,
        label: Annotated[str | None, Query(max_length=200, description="Only entries with this label.")] = None,
    ) -> dict[str, Any]:
        size = limit or config.http.page_size
        total, entries = service.list_entries(offset, size, label)
        following = None
        if offset + size < total:
            params = {"offset": offset + size, "limit": size, **({"label": label} if label is not None else {})}
            following = "/catalog?" + urlencode(params)
        return {"total": total, "offset": offset, "limit": size, "items": [entry_json(e) for e in entries], "next": following}

    @app.get("/catalog/{entry_id}", response_model=Entry, dependencies=auth, responses=_errors(400, 401, 404),
             tags=["catalog"], summary="One entry")
    def get_entry(entry_id: EntryId) -> dict[str, Any]:
        return entry_json(service.get(entry_id))

    @app.get(
        "/catalog/{entry_id}/image", dependencies=auth, tags=["catalog"], response_class=Response,
        summary="A JPEG thumbnail of the entry's photo",
        responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                         "description": "JPEG, longest side http.thumbnail_px."},
                   **_errors(400, 401, 404)},
    )
    def get_image(entry_id: EntryId) -> Response:
        return Response(service.thumbnail(entry_id), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.delete("/catalog/{entry_id}", response_model=DeleteResponse, dependencies=auth, responses=_errors(400, 401, 404),
                tags=["catalog"], summary="Remove an entry (its photo moves to <state>/deleted/)")
    def delete_entry(entry_id: EntryId) -> dict[str, Any]:
        entry, moved_to = service.delete(entry_id)
        return {"removed": entry_json(entry), "moved_to": moved_to}

    @app.post(
        "/match", dependencies=auth, tags=["match"], summary="Identify one photo",
        responses={200: {"content": {"application/json": {"schema": _MATCH_RESULT}},
                         "description": "The result object the daemon writes to outbox/ (status matched or no_match)."},
                   **_errors(400, 401, 413, 415, 422)},
    )
    def match(file: Annotated[UploadFile, File(description="The photo to identify.")]) -> Response:
        result = service.match(Upload(file.file, file.filename))
        data = result.to_dict()
        if result.status == "rejected":
            code = result.error_code or "rejected"
            return error_response(INTAKE_STATUS.get(code, 422), code, result.error or "photo refused", result=data)
        return JSONResponse(data)

    # ------------------------------------------------------------ records
    @app.get("/records/{label}", dependencies=auth, tags=["records"], summary="A cake's record",
             responses={200: {"content": {"application/json": {"schema": _CAKE_RECORD}},
                              "description": "The record, as `record` in a matched result, with `checks`: how often and when the cake was identified."},
                        **_errors(400, 401, 404)})
    def get_record(label: Annotated[str, PathParam(max_length=200, description="The cake's label.")]) -> Response:
        return JSONResponse(service.record(label))

    @app.put("/records/{label}", dependencies=auth, tags=["records"], summary="Set a cake's record",
             responses={200: {"content": {"application/json": {"schema": _CAKE_RECORD}},
                              "description": "The record now in force (the sheet's fields under the ones set here)."},
                        **_errors(400, 401)})
    def put_record(
        label: Annotated[str, PathParam(max_length=200, description="The cake's label.")],
        values: Annotated[dict[str, Any], Body(description=(
            "The fields (English or Chinese names: display_name/名称, year/年份, batch/批次, producer/生产商, "
            "weight/重量 in grams or with a unit, notes/备注; any other key is kept in `extra`). "
            "Replaces the record file beside the cake's photos (<catalog>/<label>/<label>.json)."))],
    ) -> Response:
        return JSONResponse(service.set_record(label, values))

    # ------------------------------------------------------------ history and metrics
    @app.get("/history", response_model=CheckPage, dependencies=auth, responses=_errors(400, 401, 503), tags=["history"],
             summary="The history of checks, newest first, a page at a time")
    def history(
        offset: Annotated[int, Query(ge=0, description="Checks to skip.")] = 0,
        limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Page size (default http.page_size).")] = None,
        label: Annotated[str | None, Query(max_length=200, description="Only checks that identified this cake.")] = None,
        since: Annotated[str | None, Query(max_length=64, description="Only checks since: 7d, 12h, 30m, 2w ago, or an ISO date/time.")] = None,
        status: Annotated[Literal["matched", "no_match", "rejected"] | None, Query(description="Only checks with this outcome.")] = None,
        source: Annotated[Literal["folder", "cli", "http"] | None, Query(description="Only checks from this front-end.")] = None,
    ) -> dict[str, Any]:
        size = limit or config.http.page_size
        try:
            moment = parse_since(since) if since else None
        except ValueError as err:
            raise ServiceError(400, "bad_since", str(err)) from None
        wanted = unicodedata.normalize("NFC", label) if label is not None else None
        page = service.history(Filters(label=wanted, since=moment, status=status, source=source), offset, size)
        following = None
        if offset + size < page.total:
            given = {"label": label, "since": since, "status": status, "source": source}
            following = "/history?" + urlencode({"offset": offset + size, "limit": size, **{k: v for k, v in given.items() if v is not None}})
        return {"total": page.total, "offset": offset, "limit": size, "items": [c.to_dict() for c in page.items], "next": following}

    @app.get("/metrics", dependencies=auth, tags=["server"], response_class=Response,
             summary="Prometheus metrics of this server and the daemon on the same root",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format 0.0.4: teaprint_queries_total, teaprint_stage_seconds, "
                                             "teaprint_catalog_photos, teaprint_ingest_backlog, teaprint_failed_files_total, ..."},
                        **_errors(401)})
    def metrics() -> Response:
        return Response(service.metrics(), media_type=METRICS_CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        result_schema = {k: v for k, v in load_schema().items() if k not in ("$schema", "$id")}
        schemas["MatchResult"] = result_schema
        schemas["CakeRecord"] = {**result_schema["properties"]["record"], "type": "object"}
        # Validation errors are answered 400 with ErrorBody (see validation_error).
        for item in doc.get("paths", {}).values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None) if _is_validation(operation.get("responses", {}).get("422")) else None
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _is_validation(response: dict[str, Any] | None) -> bool:
    if not response:
        return False
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def _hostname(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return unicodedata.normalize("NFC", host.rsplit(":", 1)[0] if host.count(":") == 1 else host)


def _same_origin(origin: str | None, host: str) -> bool:
    if origin is None:
        return True  # not a browser cross-site request (curl, apps, same-origin GET)
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
