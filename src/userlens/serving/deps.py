"""Dependencies shared by the routers: the service, scoped API keys, path ids."""


from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError

from userlens.serving.schemas import NO_NUL, USER_ID_PATTERN, ErrorOut, check_text
from userlens.serving.service import Service
from userlens.serving.settings import Scope
from userlens.serving.tables import ID_LENGTH

PathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=NO_NUL)]
UserPathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=USER_ID_PATTERN)]

AUTH_RESPONSES = {401: {"model": ErrorOut, "description": "missing or wrong API key"},
                  403: {"model": ErrorOut, "description": "the key lacks the scope"}}
"""Every route that needs a key declares these; the OpenAPI spec marks exactly those routes
with the API-key security schemes (see :func:`userlens.serving.app.create_app`)."""

SECURITY_SCHEMES = {
    "APIKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


def service_of(request: Request) -> Service:
    """The service behind the app. A plain call, not a dependency: every dependency FastAPI
    solves costs each request measurable time on the hot path."""
    return request.app.state.service


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require(scope: Scope):
    """A dependency that lets the request through only with a key of ``scope`` (when the
    service has keys at all): ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. It is
    ``async`` and reads the headers itself, so it costs the request no thread hop and no
    sub-dependencies."""

    async def check(request: Request) -> None:
        service = service_of(request)
        if not service.keys:
            return
        scopes = service.keys.scopes(_presented_key(request))
        if not scopes:
            raise HTTPException(401, "a valid API key is required (X-API-Key header)")
        if scope not in scopes:
            raise HTTPException(403, f"this key does not have the '{scope}' scope")

    return Depends(check)


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors (as the spec documents)."""
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error"}])


def path_id(value: str, name: str) -> str:
    try:
        return check_text(value)
    except ValueError as error:
        raise invalid(("path", name), str(error)) from error
