"""POST /items: item metadata for filters and new items."""


from fastapi import APIRouter, Request

from userlens.serving.deps import AUTH_RESPONSES, require, service_of
from userlens.serving.schemas import ItemsIn, ItemsOut

router = APIRouter(tags=["items"])


@router.post("/items", response_model=ItemsOut, dependencies=[require("write")],
             responses=AUTH_RESPONSES)
def upsert_items(body: ItemsIn, request: Request) -> ItemsOut:
    """Insert or replace item metadata. A text model scores new items with a text (``text``,
    or ``title`` and ``categories``) from that text at once; other new items are served by
    the fallback."""
    service = service_of(request)
    records = list({item.item_id: item.fields for item in body.items}.items())
    service.storage.upsert_items(records)
    service.note_items(records)
    known = sum(service.engine.items.index_of(i) is not None for i, _ in records)
    return ItemsOut(upserted=len(records), known_to_model=known)
