"""Dependencies shared by the routers: the service, scoped API keys, path ids."""


from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from userlens.serving.schemas import NO_NUL, USER_ID_PATTERN, ErrorOut, check_text
from userlens.serving.service import Service
from userlens.serving.settings import Scope
from userlens.serving.tables import ID_LENGTH

PathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=NO_NUL)]
UserPathId = Annotated[str, Path(min_length=1, max_length=ID_LENGTH, pattern=USER_ID_PATTERN)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)

AUTH_RESPONSES = {401: {"model": ErrorOut, "description": "missing or wrong API key"},
                  403: {"model": ErrorOut, "description": "the key lacks the scope"}}


# Dependencies are ``async``: they only read the app state and compare keys, and a plain
# ``def`` dependency would cost every request an extra hop through the thread pool.
async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def require(scope: Scope):
    """A dependency that lets the request through only with a key of ``scope`` (when the
    service has keys at all)."""

    async def check(service: ServiceDep,
              key: Annotated[str | None, Security(_api_key_header)] = None,
              token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
              ) -> None:
        if not service.keys:
            return
        given = key or (token.credentials if token is not None else None)
        scopes = service.keys.scopes(given)
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
