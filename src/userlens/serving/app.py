"""The HTTP API: ``create_app(engine, storage, settings)`` wires one router per resource
(``routes/``) around a :class:`~userlens.serving.service.Service`; nothing runs at import.

Where the work can be large, handlers are plain functions that FastAPI runs in its thread
pool: writes (they wait on fsync), history pages (up to 100,000 events), erasure, reloads,
health, and building a filter's item mask the first time it is asked for (one pass over the
catalogue). Trending is refreshed by a background task, off the request path, in the
intervals after a fallback used it.

The four recommendation routes stay on the event loop: their work is bounded by
construction (one indexed read of at most ``max_history`` events, one scoring pass of one
history, or an ANN search past ``ann_min_items``), and a hop to the thread pool costs more
than that work on a small machine: on 2 cores it raised p99 at 8 connections from about 23
to 35-45 ms and cut throughput by a quarter (``benchmarks/serve_http.py``, see
``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from userlens import __version__
from userlens.serving.deps import SECURITY_SCHEMES
from userlens.serving.engine import Engine
from userlens.serving.observability import Measure
from userlens.serving.profiles import Profiles
from userlens.serving.routes import (
    admin,
    conversations,
    events,
    items,
    profiles,
    recommendations,
    users,
)
from userlens.serving.schemas import ErrorOut
from userlens.serving.server import BodyLimit
from userlens.serving.service import Service
from userlens.serving.settings import ServeSettings
from userlens.serving.storage import Storage

logger = logging.getLogger(__name__)


async def _every(seconds: float, work, what: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(work)
        except Exception:  # noqa: BLE001 (a database hiccup must not stop the loop)
            logger.exception("%s failed", what)


def _document_security(app: FastAPI) -> None:
    """Mark the routes that need a key (those that declare a 401) with the API-key schemes
    in the OpenAPI spec; the check itself is the ``require`` dependency."""
    build_spec = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build_spec()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "401" in operation.get("responses", {}):
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def create_app(engine: Engine, storage: Storage, settings: ServeSettings) -> FastAPI:
    """The userlens API over a loaded engine and an opened storage."""
    service = Service(engine, storage, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        tasks = [asyncio.create_task(_every(settings.reload_poll_seconds, service.follow,
                                            "checking for reloads")),
                 asyncio.create_task(_every(5.0, service.refresh_fields,
                                            "reading other workers' /items"))]
        if settings.trending_cache_seconds > 0:
            await asyncio.to_thread(service.refresh_trending)
            tasks.append(asyncio.create_task(_every(
                settings.trending_cache_seconds, service.refresh_trending_if_used, "trending")))
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(title="userlens", version=__version__, lifespan=lifespan,
                  description="Events in, recommendations out; every event updates the user "
                              "at once.",
                  responses={413: {"model": ErrorOut, "description": "body too large"}})
    app.state.service = service
    app.state.profiles = Profiles(service)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input back, which fails for NaN (a 500); name the
        # field and say what is wrong instead.
        problems = [{"loc": [p if isinstance(p, int) else str(p) for p in e["loc"]],
                     "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        message = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
                            for e in problems)
        return JSONResponse({"detail": problems, "message": message}, 422)

    app.include_router(events.router)
    app.include_router(recommendations.build(settings))
    app.include_router(users.router)
    app.include_router(profiles.router)
    app.include_router(items.router)
    app.include_router(admin.router)
    if settings.conversation is not None:
        from userlens.serving.conversations import ConversationService

        app.state.conversations = ConversationService.load(
            settings.conversation, storage, max_history=settings.max_history)
        app.state.profiles.stated = app.state.conversations.stated
        app.include_router(conversations.router)
    _document_security(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Measure, metrics=service.metrics)
    return app
