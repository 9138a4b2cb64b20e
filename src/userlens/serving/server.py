"""Starting the service: the body-size guard, the uvicorn entry points, the bind check."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from userlens.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

SETTINGS_FILE_VARIABLE = "USERLENS_SETTINGS_FILE"
"""For ``--workers N``: each uvicorn worker reads the CLI's settings from this JSON file."""


class BodyLimit:
    """ASGI middleware: read the body (chunked or not) up to ``limit`` bytes and answer 413
    as soon as it is exceeded; the app then sees the buffered body."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        has_body = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    return await _reply(send, 413, f"request body over {self.limit} bytes")
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # GET and friends: nothing to read or buffer
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await _reply(send, 413, f"request body over {self.limit} bytes")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _reply(send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def check_exposure(settings: ServeSettings) -> str | None:
    """Why this configuration must not start (an open, keyless, non-loopback bind)."""
    if settings.exposed() and not settings.keys() and not settings.insecure:
        return (f"refusing to serve on {settings.host} without API keys: set USERLENS_API_KEY "
                "or USERLENS_API_KEYS_FILE, or pass --insecure")
    return None


def build(settings: ServeSettings):
    """Open the storage, load the engine and wire the app (one process)."""
    from userlens.serving.app import create_app
    from userlens.serving.service import load_engine
    from userlens.serving.storage import Storage

    storage = Storage(settings.database_url(), migrate=False)
    engine = load_engine(settings.artefact, settings)
    logger.info("worker %d serving %s", os.getpid(), engine.version)
    return create_app(engine, storage, settings)


def app_from_settings_file():
    """uvicorn factory for ``--workers N``: each worker reads the settings the CLI wrote."""
    path = Path(os.environ[SETTINGS_FILE_VARIABLE])
    return build(ServeSettings.model_validate_json(path.read_text()))


def run(settings: ServeSettings, app=None) -> None:
    """Serve with uvicorn: ``app`` in this process, or ``settings.workers`` processes."""
    import uvicorn

    if settings.workers == 1:
        uvicorn.run(app or build(settings), host=settings.host, port=settings.port,
                    log_level="warning")
        return
    folder = Path(tempfile.mkdtemp(prefix="userlens-serve-"))
    settings_file = folder / "settings.json"
    settings_file.touch(mode=0o600)
    dumped = settings.model_dump(mode="json")
    if settings.api_key is not None:
        dumped["api_key"] = settings.api_key.get_secret_value()
    settings_file.write_text(json.dumps(dumped))
    os.environ[SETTINGS_FILE_VARIABLE] = str(settings_file)
    # workers write their metrics here and /metrics adds them up
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run("userlens.serving.server:app_from_settings_file", factory=True,
                host=settings.host, port=settings.port, workers=settings.workers,
                log_level="warning")
