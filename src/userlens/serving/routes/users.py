"""A user's stored history (paged) and erasure."""


from typing import Annotated

from fastapi import APIRouter, Query, Request

from userlens.serving.deps import AUTH_RESPONSES, UserPathId, invalid, path_id, require, service_of
from userlens.serving.schemas import ErasedOut, EventOut, HistoryOut

router = APIRouter(tags=["users"])
INT64_MAX = 2**63 - 1
CURSOR_QUERY = Query(max_length=64, pattern=r"^[0-9]{1,19}\.[0-9]{1,19}$",
                     description="next_cursor of the previous page: events older than it")


def _cursor(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    ts_ms, sep, row = text.partition(".")
    if not sep or not (ts_ms.isascii() and ts_ms.isdigit() and row.isascii() and row.isdigit()):
        raise invalid(("query", "cursor"), "not a cursor from a previous page")
    # the pattern allows 19 digits: past the database's 64-bit range a cursor is later
    # than every event, which is what INT64_MAX says too
    return min(int(ts_ms), INT64_MAX), min(int(row), INT64_MAX)


@router.get("/users/{user_id}/history", response_model=HistoryOut,
            dependencies=[require("read")], responses=AUTH_RESPONSES)
def history(user_id: UserPathId, request: Request,
            limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
            cursor: Annotated[str | None, CURSOR_QUERY] = None) -> HistoryOut:
    """The user's stored events, oldest first: the newest ``limit`` (default: one page),
    and ``next_cursor`` to fetch the page before them."""
    service = service_of(request)
    user_id = path_id(user_id, "user_id")
    limit = limit or service.settings.history_page
    events = service.storage.history(user_id, limit + 1, before=_cursor(cursor))
    more = len(events) > limit
    events = events[1:] if more else events
    next_cursor = f"{events[0].ts_ms}.{events[0].row}" if more else None
    return HistoryOut(user_id=user_id, next_cursor=next_cursor, events=[
        EventOut(user_id=e.user_id, item_id=e.item_id, timestamp=e.ts_ms / 1000,
                 type=e.type, value=e.value, event_id=e.event_id) for e in events])


@router.delete("/users/{user_id}", response_model=ErasedOut, dependencies=[require("write")],
               responses=AUTH_RESPONSES)
def erase(user_id: UserPathId, request: Request) -> ErasedOut:
    """Erase every stored event and record of the user (and this worker's caches of them);
    their event ids are kept as tombstones so a retried POST does not restore them."""
    service = service_of(request)
    user_id = path_id(user_id, "user_id")
    return ErasedOut(user_id=user_id, removed=service.erase(user_id))
