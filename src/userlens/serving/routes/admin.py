"""Health, Prometheus metrics and artefact reloads."""


import logging
import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from userlens.serving.deps import AUTH_RESPONSES, require, service_of
from userlens.serving.routes.recommendations import model_info
from userlens.serving.schemas import ErrorOut, HealthOut, ReloadIn, ReloadOut
from userlens.serving.service import ReloadRefused

logger = logging.getLogger(__name__)

router = APIRouter(tags=["admin"])


@router.get("/health", response_model=HealthOut)
def health(request: Request) -> HealthOut:
    service = service_of(request)
    engine = service.engine
    service.storage.ping()  # raises (500 -> unhealthy) when the database is unreachable
    return HealthOut(status="ok", model=model_info(engine), items=engine.n_items,
                     database=service.storage.dialect, worker_pid=os.getpid())


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format (all workers' counters added up)."""
    service = service_of(request)
    return PlainTextResponse(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post("/admin/reload", response_model=ReloadOut, dependencies=[require("admin")],
             responses={**AUTH_RESPONSES,
                        409: {"model": ErrorOut, "description": "the artefact cannot be "
                              "loaded or is outside the artefact root; the old model keeps "
                              "serving"}})
def reload(request: Request, body: ReloadIn | None = None) -> ReloadOut | JSONResponse:
    """Swap in an artefact from under the artefact root (``USERLENS_ARTEFACT_ROOT``) after
    checking its arrays and scoring one history with it; on failure the old one keeps
    serving."""
    service = service_of(request)
    try:
        engine, previous = service.reload(body.path if body else None)
    except ReloadRefused as refused:
        return JSONResponse({"detail": f"reload refused ({refused.reason}); still serving "
                                       f"{service.engine.version}"}, 409)
    return ReloadOut(reloaded=True, model=model_info(engine), previous_version=previous)
