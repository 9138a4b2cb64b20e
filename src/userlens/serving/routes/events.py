"""POST /events: events in, each checked on its own."""


from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError

from userlens.serving.deps import AUTH_RESPONSES, require, service_of
from userlens.serving.schemas import EventBatchIn, EventIn, EventsOut, RejectedEvent
from userlens.serving.storage import StoredEvent, now_ms

router = APIRouter(tags=["events"])


@router.post("/events", response_model=EventsOut, dependencies=[require("write")],
             responses=AUTH_RESPONSES)
def post_events(batch: EventBatchIn, request: Request) -> EventsOut:
    """Store events durably (one transaction, committed before the response). A bad event
    (malformed, in the future, of a type the model does not know) is rejected with its
    reason; the others are stored."""
    service = service_of(request)
    settings = service.settings
    if len(batch.events) > settings.max_events_per_request:
        raise HTTPException(413, f"events: at most {settings.max_events_per_request} "
                                 "per request")
    arrival = now_ms()
    max_future_ms = int(settings.max_future_seconds * 1000)
    good: list[StoredEvent] = []
    positions: list[int] = []
    rejected: list[RejectedEvent] = []
    for index, raw in enumerate(batch.events):
        try:
            event = EventIn.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            rejected.append(RejectedEvent(index=index, field=field, reason=first["msg"]))
            continue
        try:
            stamp = event.timestamp_ms(arrival, max_future_ms)
        except ValueError as error:
            rejected.append(RejectedEvent(index=index, field="timestamp", reason=str(error)))
            continue
        problem = service.event_problem(event.type)
        if problem is not None:
            rejected.append(RejectedEvent(index=index, field="type", reason=problem))
            continue
        good.append(StoredEvent(event.user_id, event.item_id, stamp, event.type,
                                event.value, event.event_id))
        positions.append(index)
    result = service.storage.add_events(good)
    duplicates = [positions[p] for p in result.duplicates]
    service.metrics.events.labels("accepted").inc(result.inserted)
    service.metrics.events.labels("duplicate").inc(len(duplicates))
    service.metrics.events.labels("rejected").inc(len(rejected))
    return EventsOut(accepted=result.inserted, duplicates=duplicates, rejected=rejected)
