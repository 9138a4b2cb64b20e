"""The HTTP API: ``create_app(engine, storage, settings)`` builds it; nothing runs at import.

Read routes (recommendations, rank, similar, history) are ``async`` handlers that run their
short CPU-bound work (an indexed read of one user's history, one scoring pass) inline on the
event loop: one request at a time per worker process, with the others waiting in the
loop's queue. Measured on 2 cores, this keeps the tail latency low where a thread pool
(FastAPI's default for ``def`` handlers) made requests interleave on the GIL. Writes, which
wait on fsync, stay in the thread pool. Scale reads with ``--workers``.
"""

import asyncio
import json
import logging
import math
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import StringConstraints, ValidationError

from userlens.serving.engine import ArtefactError, Engine, Filter, Scored
from userlens.serving.schemas import (
    NO_NUL,
    ErasedOut,
    ErrorOut,
    EventBatchIn,
    EventIn,
    EventOut,
    EventsOut,
    HealthOut,
    HistoryIn,
    HistoryOut,
    ItemsIn,
    ItemsOut,
    ModelInfo,
    RankIn,
    RankOut,
    RecommendationsOut,
    RejectedEvent,
    ReloadIn,
    ReloadOut,
    ScoredItem,
    SimilarOut,
    check_text,
)
from userlens.serving.settings import ServeSettings
from userlens.serving.storage import Storage, StoredEvent, now_ms
from userlens.serving.tables import ID_LENGTH

logger = logging.getLogger(__name__)

FILTER_PATTERN = r"^[^:]+:[\s\S]+$"
FilterText = Annotated[str, StringConstraints(pattern=FILTER_PATTERN)]
PathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=NO_NUL)]


class Metrics:
    """Prometheus metrics in the app's own registry (no process globals).

    With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by ``userlens serve
    --workers N``) every worker writes its values to that folder and ``/metrics`` adds them
    up, whichever worker answers the scrape.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.requests = Counter("userlens_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "userlens_request_seconds", "request latency", ["method", "route"],
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10),
            registry=self.registry)
        self.events = Counter("userlens_events", "events by outcome", ["outcome"],
                              registry=self.registry)
        self.fallbacks = Counter("userlens_fallback_recommendations",
                                 "recommendation lists served entirely by the fallback",
                                 registry=self.registry)
        self.model = Gauge("userlens_model_info", "served model (value 1)",
                           ["name", "version"], registry=self.registry,
                           multiprocess_mode="liveall")

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)

    def set_model(self, engine: Engine) -> None:
        self.model.clear()
        self.model.labels(engine.model.name, engine.version).set(1)


class Service:
    """Mutable state behind the app: the current engine and the caches that refresh."""

    def __init__(self, engine: Engine, storage: Storage, settings: ServeSettings) -> None:
        self.engine = engine
        self.storage = storage
        self.settings = settings
        self.metrics = Metrics()
        self.metrics.set_model(engine)
        self._reload_lock = threading.Lock()
        self._trending: tuple[float, list[tuple[str, int]]] = (-math.inf, [])
        self._fields_version = storage.items_version()
        self._fields: dict[str, dict[str, Any]] = storage.item_fields()
        self._fields_stamp = 0
        self._fields_checked = time.monotonic()

    # --------------------------------------------------------------- caches

    def stored_fields(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Item metadata posted to /items. Every 5 s a one-row query says whether another
        worker wrote; only then is the table read again."""
        if time.monotonic() - self._fields_checked > 5.0:
            self._fields_checked = time.monotonic()
            version = self.storage.items_version()
            if version != self._fields_version:
                self._fields_version = version
                self._fields, self._fields_stamp = (self.storage.item_fields(),
                                                    self._fields_stamp + 1)
        return self._fields, self._fields_stamp

    def note_items(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        fields = dict(self._fields)
        fields.update(records)
        self._fields, self._fields_stamp = fields, self._fields_stamp + 1

    def trending(self) -> list[tuple[str, int]]:
        stamp, cached = self._trending
        if time.monotonic() - stamp > self.settings.trending_cache_seconds:
            since = now_ms() - int(self.settings.trending_window_hours * 3_600_000)
            cached = self.storage.trending(since, self.settings.max_k)
            self._trending = (time.monotonic(), cached)
        return cached

    # --------------------------------------------------------------- recommendations

    def recommend(self, history: list[str], k: int, exclude_seen: bool,
                  expressions: list[str], where_from: tuple[str, ...] = ("query", "filter"),
                  ) -> tuple[list[Scored], int, bool]:
        """Model items first, then fallback items until k; (items, skipped, fallback only)."""
        engine = self.engine
        try:
            where = Filter.parse(expressions)
        except ValueError as error:
            raise invalid(where_from, str(error)) from error
        fields, stamp = self.stored_fields() if where else ({}, 0)
        allowed = engine.allowed(where, fields, stamp) if where else None
        items, skipped, personalised = engine.recommend(history, k, exclude_seen=exclude_seen,
                                                        allowed=allowed)
        if len(items) < k:
            items += self.fallback(engine, k - len(items), history if exclude_seen else [],
                                   {s.item_id for s in items}, where, allowed)
        if not personalised:
            self.metrics.fallbacks.inc()
        return items, skipped, not personalised

    def fallback(self, engine: Engine, k: int, seen: list[str], taken: set[str],
                 where: Filter, allowed) -> list[Scored]:
        """Trending items (recent events), then training popularity, then new catalogue items."""
        skip = set(seen) | taken
        out: list[Scored] = []
        fields = self.stored_fields()[0] if where else {}

        def admit(item_id: str) -> bool:
            if item_id in skip:
                return False
            if where:
                index = engine.items.index_of(item_id)
                ok = (bool(allowed[index]) if index is not None
                      else where.matches(fields.get(item_id)))
                if not ok:
                    return False
            skip.add(item_id)
            return True

        for item_id, count in self.trending():
            if len(out) == k:
                return out
            if admit(item_id):
                out.append(Scored(item_id, float(count), "trending"))
        popularity = engine.model.popularity_
        for index in engine.popular().tolist():
            if len(out) == k:
                return out
            item_id = engine.items.ids[index]
            if admit(item_id):
                score = float(popularity[index]) if popularity is not None else None
                out.append(Scored(item_id, score, "popular"))
        for item_id in self.stored_fields()[0]:
            if len(out) == k:
                break
            if engine.items.index_of(item_id) is None and admit(item_id):
                out.append(Scored(item_id, None, "new"))
        return out

    def reload(self, path: str | None, *, announce: bool = True) -> tuple[Engine, str]:
        """Load a new artefact and swap it in; on any failure the old engine keeps serving.

        ``announce`` records the new artefact in the database, where the other worker
        processes find it (:meth:`follow`) and load it too.
        """
        with self._reload_lock:
            previous = self.engine
            engine = load_engine(path or previous.path, self.settings)
            self.engine = engine
            self.metrics.set_model(engine)
            if announce:
                self.storage.set_state("artefact", served_state(engine))
            return engine, previous.version

    def follow(self) -> None:
        """Load the artefact another worker announced, if it differs from ours."""
        state = self.storage.get_state("artefact")
        if state and state.get("version") != self.engine.version:
            logger.info("worker %d follows the reload to %s", os.getpid(), state["version"])
            try:
                self.reload(state["path"], announce=False)
            except (ArtefactError, OSError, ValueError) as error:
                logger.warning("could not follow the reload to %s: %s", state["path"], error)


def load_engine(path: str | FilePath, settings: ServeSettings) -> Engine:
    """Load an artefact with the service's history, ANN and thread settings."""
    return Engine.load(path, max_history=settings.max_history,
                       ann_min_items=settings.ann_min_items, ann_kind=settings.ann_kind,
                       ann_depth=settings.ann_depth, torch_threads=settings.torch_threads)


def served_state(engine: Engine) -> dict[str, str]:
    return {"path": str(FilePath(engine.path).resolve()), "version": engine.version}


def _scored(items: list[Scored]) -> list[ScoredItem]:
    return [ScoredItem(item_id=s.item_id, score=s.score, source=s.source) for s in items]


def _model(engine: Engine) -> ModelInfo:
    return ModelInfo(name=engine.model.name, version=engine.version)


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors (as the spec documents)."""
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error"}])


def _path_id(value: str, name: str) -> str:
    try:
        return check_text(value)
    except ValueError as error:
        raise invalid(("path", name), str(error)) from error


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except (OSError, ValueError):
        return False


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413 before reading them all."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _plain(send, 413, f"request body over {self.limit} bytes")
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge()
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await _plain(send, 413, f"request body over {self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _plain(send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Measure:
    """ASGI middleware: count requests and observe latency per route template."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(
                time.perf_counter() - started)


def create_app(engine: Engine, storage: Storage, settings: ServeSettings) -> FastAPI:
    """The userlens API over a loaded engine and an opened storage."""
    service = Service(engine, storage, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        async def follow_reloads() -> None:
            while True:
                await asyncio.sleep(settings.reload_poll_seconds)
                try:
                    await asyncio.to_thread(service.follow)
                except Exception:  # noqa: BLE001 (a database hiccup must not stop polling)
                    logger.exception("checking for reloads failed")

        task = asyncio.create_task(follow_reloads())
        yield
        task.cancel()

    app = FastAPI(title="userlens", version="0.1.0", lifespan=lifespan,
                  description="Events in, recommendations out; every event updates the user "
                              "at once.",
                  responses={413: {"model": ErrorOut, "description": "body too large"}})
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input back, which fails for NaN (a 500); name the
        # field and say what is wrong instead.
        problems = [{"loc": [p if isinstance(p, int) else str(p) for p in e["loc"]],
                     "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        message = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
                            for e in problems)
        return JSONResponse({"detail": problems, "message": message}, 422)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def require_key(key: Annotated[str | None, Security(api_key_header)] = None,
                    token: Annotated[HTTPAuthorizationCredentials | None,
                                     Security(bearer)] = None) -> None:
        if settings.api_key is None:
            return
        given = key or (token.credentials if token is not None else None)
        if given != settings.api_key:
            raise HTTPException(401, "a valid API key is required (X-API-Key header)")

    writer = [Depends(require_key)]
    auth_responses = {401: {"model": ErrorOut, "description": "missing or wrong API key"}}
    k_query = Query(ge=1, le=settings.max_k, description="number of items")
    filter_query = Query(max_length=20,
                         description="field:value, repeatable, e.g. genre:Comedy")

    @app.post("/events", response_model=EventsOut, dependencies=writer,
              responses=auth_responses, tags=["events"])
    def post_events(batch: EventBatchIn) -> EventsOut:
        """Store events durably (one transaction, fsynced before the response)."""
        if len(batch.events) > settings.max_events_per_request:
            raise HTTPException(413, f"events: at most {settings.max_events_per_request} "
                                     "per request")
        arrival = now_ms()
        good: list[StoredEvent] = []
        positions: list[int] = []
        rejected: list[RejectedEvent] = []
        for index, raw in enumerate(batch.events):
            try:
                event = EventIn.model_validate(raw)
                stamp = event.timestamp_ms(arrival)
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(str(part) for part in first["loc"]) or None
                rejected.append(RejectedEvent(index=index, field=field, reason=first["msg"]))
                continue
            except ValueError as error:
                rejected.append(RejectedEvent(index=index, field="timestamp",
                                              reason=str(error)))
                continue
            good.append(StoredEvent(event.user_id, event.item_id, stamp, event.type,
                                    event.value, event.event_id))
            positions.append(index)
        result = storage.add_events(good)
        duplicates = [positions[p] for p in result.duplicates]
        service.metrics.events.labels("accepted").inc(result.inserted)
        service.metrics.events.labels("duplicate").inc(len(duplicates))
        service.metrics.events.labels("rejected").inc(len(rejected))
        return EventsOut(accepted=result.inserted, duplicates=duplicates, rejected=rejected)

    @app.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
             tags=["recommendations"])
    async def user_recommendations(user_id: PathId, k: Annotated[int, k_query] = 10,
                             exclude_seen: bool = True,
                             filter: Annotated[list[FilterText] | None, filter_query] = None,  # noqa: A002
                             ) -> RecommendationsOut:
        """Recommendations from the user's stored history, including events just posted."""
        user_id = _path_id(user_id, "user_id")
        engine = service.engine
        history = storage.history_items(user_id, limit=settings.max_history)
        items, skipped, fallback = service.recommend(history, k, exclude_seen, filter or [])
        return RecommendationsOut(user_id=user_id, items=_scored(items), fallback=fallback,
                                  history_length=len(history), unknown_items_skipped=skipped,
                                  model=_model(engine))

    @app.post("/recommendations", response_model=RecommendationsOut,
              tags=["recommendations"])
    async def session_recommendations(body: HistoryIn) -> RecommendationsOut:
        """Recommendations for an ad-hoc history (an anonymous session), oldest first."""
        engine = service.engine
        history = body.history[-settings.max_history:]
        items, skipped, fallback = service.recommend(history, min(body.k, settings.max_k),
                                                     body.exclude_seen, body.filter,
                                                     ("body", "filter"))
        return RecommendationsOut(user_id=None, items=_scored(items), fallback=fallback,
                                  history_length=len(history), unknown_items_skipped=skipped,
                                  model=_model(engine))

    @app.post("/users/{user_id}/rank", response_model=RankOut, tags=["recommendations"])
    async def rank(user_id: PathId, body: RankIn) -> RankOut:
        """Order candidate items for a user; items the model does not know go last."""
        user_id = _path_id(user_id, "user_id")
        engine = service.engine
        history = storage.history_items(user_id, limit=engine.max_history)
        items, _ = engine.rank(history, body.items)
        return RankOut(user_id=user_id, items=_scored(items), model=_model(engine))

    @app.get("/items/{item_id}/similar", response_model=SimilarOut,
             responses={404: {"model": ErrorOut}}, tags=["items"])
    async def similar(item_id: PathId, k: Annotated[int, k_query] = 10) -> SimilarOut:
        """Items the model recommends to someone who just interacted with this one."""
        item_id = _path_id(item_id, "item_id")
        engine = service.engine
        if engine.items.index_of(item_id) is None:
            raise HTTPException(404, f"item_id {item_id!r} is not known to the model")
        return SimilarOut(item_id=item_id, items=_scored(engine.similar(item_id, k)),
                          model=_model(engine))

    @app.get("/users/{user_id}/history", response_model=HistoryOut, tags=["users"])
    async def history(user_id: PathId,
                limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> HistoryOut:
        """The user's stored events, oldest first (the newest ``limit`` when given)."""
        user_id = _path_id(user_id, "user_id")
        events = storage.history(user_id, limit)
        return HistoryOut(user_id=user_id, events=[
            EventOut(user_id=e.user_id, item_id=e.item_id, timestamp=e.ts_ms / 1000,
                     type=e.type, value=e.value, event_id=e.event_id) for e in events])

    @app.delete("/users/{user_id}", response_model=ErasedOut, dependencies=writer,
                responses=auth_responses, tags=["users"])
    def erase(user_id: PathId) -> ErasedOut:
        """Erase every stored event and record of the user."""
        user_id = _path_id(user_id, "user_id")
        return ErasedOut(user_id=user_id, removed=storage.erase_user(user_id))

    @app.post("/items", response_model=ItemsOut, dependencies=writer,
              responses=auth_responses, tags=["items"])
    def upsert_items(body: ItemsIn) -> ItemsOut:
        """Insert or replace item metadata; unknown items are served by the fallback."""
        records = list({item.item_id: item.fields for item in body.items}.items())
        storage.upsert_items(records)
        service.note_items(records)
        known = sum(service.engine.items.index_of(i) is not None for i, _ in records)
        return ItemsOut(upserted=len(records), known_to_model=known)

    @app.get("/health", response_model=HealthOut, tags=["admin"])
    def health() -> HealthOut:
        engine = service.engine
        storage.counts()  # raises (500 -> unhealthy) when the database is unreachable
        return HealthOut(status="ok", model=_model(engine), items=engine.n_items,
                         database=storage.dialect, worker_pid=os.getpid())

    @app.get("/metrics", response_class=PlainTextResponse, tags=["admin"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text format (all workers' counters added up)."""
        return PlainTextResponse(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", response_model=ReloadOut, dependencies=writer,
              responses={**auth_responses,
                         404: {"model": ErrorOut, "description": "no such directory"},
                         409: {"model": ErrorOut, "description": "the artefact cannot be "
                               "loaded; the old model keeps serving"}}, tags=["admin"])
    def reload(body: ReloadIn | None = None) -> ReloadOut | JSONResponse:
        """Swap in a new artefact atomically; if it fails to load the old one keeps serving."""
        path = body.path if body else None
        try:
            engine, previous = service.reload(path)
        except (ArtefactError, OSError, ValueError) as error:
            logger.warning("reload failed, still serving %s: %s", service.engine.version, error)
            missing = path is not None and not _is_dir(path)
            return JSONResponse({"detail": f"reload failed, still serving "
                                           f"{service.engine.version}: {error}"},
                                404 if missing else 409)
        return ReloadOut(reloaded=True, model=_model(engine), previous_version=previous)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Measure, metrics=service.metrics)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for ``--workers N``: each worker reads USERLENS_* and builds its app."""
    settings = ServeSettings()
    storage = Storage(settings.database_url(), migrate=False)
    engine = load_engine(settings.artefact, settings)
    logger.info("worker %d serving %s", os.getpid(), engine.version)
    return create_app(engine, storage, settings)
