"""Request and response bodies of the HTTP API (pydantic; they are the OpenAPI spec)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from userlens.serving.tables import ID_LENGTH

MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def check_utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid UTF-8 text (lone surrogate)") from error
    return value


def check_text(value: str) -> str:
    """Ids and types must be storable by every backend: no NUL, valid UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return check_utf8(value)


NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL; the spec says so, so clients know before they send."""

USER_ID_PATTERN = r"^[^\x00/%]*$"
"""User ids appear in URL paths (``/users/{user_id}/history``, ``DELETE /users/{user_id}``),
so every user id that ingestion accepts must be routable, readable and erasable: no ``/``,
no ``%`` (some HTTP stacks decode a path twice, turning ``%2F`` into ``/``), not ``.`` or
``..`` (which HTTP clients collapse), no NUL."""


def check_user_id(value: str) -> str:
    if "/" in value or "%" in value:
        raise ValueError("must not contain '/' or '%' (user ids are used in URL paths)")
    if value in (".", ".."):
        raise ValueError("must not be '.' or '..' (ids are used in URL paths)")
    return check_text(value)


ExternalId = Annotated[str, Field(min_length=1, max_length=ID_LENGTH, pattern=NO_NUL),
                       AfterValidator(check_text)]
UserId = Annotated[str, Field(min_length=1, max_length=ID_LENGTH, pattern=USER_ID_PATTERN),
                   AfterValidator(check_user_id)]


class EventIn(BaseModel):
    """One interaction. Missing timestamp = time of arrival; event_id makes retries safe."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    item_id: ExternalId
    timestamp: datetime | float | None = Field(
        default=None, description="Unix seconds or ISO 8601; default: time of arrival")
    type: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL),
                    AfterValidator(check_text)] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL),
                        AfterValidator(check_text)] | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be unix seconds or an ISO 8601 date, not a boolean")
        return value

    def timestamp_ms(self, default_ms: int, max_future_ms: int | None = None) -> int:
        """Milliseconds since the epoch; ``default_ms`` when absent.

        Raises:
            ValueError: before 1970, or more than ``max_future_ms`` after ``default_ms``.
        """
        if self.timestamp is None:
            return default_ms
        seconds = (self.timestamp.timestamp() if isinstance(self.timestamp, datetime)
                   else float(self.timestamp))
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMESTAMP_SECONDS:
            raise ValueError("timestamp must be between 1970 and 9999 (unix seconds)")
        stamp = int(round(seconds * 1000))
        if max_future_ms is not None and stamp > default_ms + max_future_ms:
            raise ValueError(f"timestamp is {(stamp - default_ms) / 1000:.0f} s in the future "
                             f"(at most {max_future_ms / 1000:.0f} s allowed)")
        return stamp


class EventBatchIn(BaseModel):
    """Events are checked one by one: a bad event is rejected with a reason, the rest stored."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        min_length=1, json_schema_extra={"items": EventIn.model_json_schema()},
        description="each item is an EventIn")


class RejectedEvent(BaseModel):
    index: int = Field(description="position in the request's events list")
    field: str | None = Field(description="the offending field, when one is to blame")
    reason: str


class EventsOut(BaseModel):
    accepted: int = Field(description="events stored by this request")
    duplicates: list[int] = Field(
        description="positions of events whose event_id was already stored (not stored again)")
    rejected: list[RejectedEvent]


Source = Literal["model", "ann", "trending", "popular", "new", "unknown"]


class Reason(BaseModel):
    item_id: str = Field(description="a history item that drove the recommendation")
    weight: float = Field(description="its contribution: exact for item-item models (EASE, "
                                      "ItemKNN), cosine similarity for factor models, the "
                                      "score drop when it is removed for sequence models")


class ScoredItem(BaseModel):
    item_id: str
    score: float | None = Field(description="model score, or event count for fallbacks")
    source: Source


class RecommendedItem(ScoredItem):
    """A recommended item; ``because`` and ``interest`` only with ``explain=true``."""

    because: list[Reason] | None = Field(
        default=None, description="explain=true only: the history events that drove it, "
                                  "strongest first")
    interest: str | None = Field(
        default=None, description="explain=true only: the profile interest (FIELD:VALUE) "
                                  "it serves, if any")


class ModelInfo(BaseModel):
    name: str
    version: str


class RecommendationsOut(BaseModel):
    user_id: str | None
    items: list[RecommendedItem]
    fallback: bool = Field(description="true when the model could not personalise "
                                       "(unknown user, empty history) and all items are fallback")
    history_length: int
    unknown_items_skipped: int = Field(description="history items the model does not know")
    model: ModelInfo


class HistoryIn(BaseModel):
    """An ad-hoc history (anonymous session), oldest first."""

    model_config = ConfigDict(extra="forbid")

    history: list[ExternalId] = Field(max_length=10_000)
    k: int = Field(default=10, ge=1, le=1000)
    exclude_seen: bool = True
    filter: list[Annotated[str, Field(pattern=r"^[^:]+:[\s\S]+$")]] = Field(
        default_factory=list, max_length=20,
                              description="field:value conditions, e.g. genre:Comedy")


class RankIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ExternalId] = Field(min_length=1, max_length=10_000)


class RankOut(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model: ModelInfo


class SimilarOut(BaseModel):
    item_id: str
    items: list[ScoredItem]
    model: ModelInfo


class EventOut(BaseModel):
    user_id: str
    item_id: str
    timestamp: float = Field(description="unix seconds")
    type: str | None
    value: float | None
    event_id: str | None


class HistoryOut(BaseModel):
    user_id: str
    events: list[EventOut]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the page of older events; null at "
                                  "the first event")


class ErasedOut(BaseModel):
    user_id: str
    removed: dict[str, int] = Field(description="rows removed per table")


def check_fields(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata must be JSON every backend stores: valid UTF-8, finite numbers (NUL is
    fine: it is stored escaped in JSON text)."""

    def walk(node: Any, depth: int) -> None:
        if depth > 8:
            raise ValueError("is nested too deeply (more than 8 levels)")
        if isinstance(node, str):
            check_utf8(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("must not contain NaN or infinite numbers")
        elif isinstance(node, dict):
            for key, child in node.items():
                check_utf8(str(key))
                walk(child, depth + 1)
        elif isinstance(node, list):
            for child in node:
                walk(child, depth + 1)

    walk(value, 0)
    if len(json.dumps(value)) > 65_536:
        raise ValueError("must be at most 64 KiB of JSON")
    return value


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: ExternalId
    fields: Annotated[dict[str, Any], AfterValidator(check_fields)] = Field(
        default_factory=dict, description="metadata, e.g. {\"genres\": [\"Comedy\"]}")


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, max_length=10_000)


class ItemsOut(BaseModel):
    upserted: int
    known_to_model: int = Field(description="how many of them the served model can score")


class HealthOut(BaseModel):
    status: Literal["ok"]
    model: ModelInfo
    items: int
    database: str
    worker_pid: int = Field(description="the worker process that answered")


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, max_length=4096,
                             description="artefact directory; default: the one being served")


class ReloadOut(BaseModel):
    reloaded: bool
    model: ModelInfo
    previous_version: str


class ErrorOut(BaseModel):
    detail: str


# --------------------------------------------------------------------- conversations

class ConversationStart(BaseModel):
    """Start from a user's stored history (``user_id``) or from an anonymous history."""

    model_config = ConfigDict(extra="forbid")
    user_id: UserId | None = None
    history: list[ExternalId] | None = Field(default=None, max_length=10_000,
                                             description="item ids, oldest first")


class TurnReply(BaseModel):
    """The answer to a question, or the verdict on a list: exactly one key."""

    # "exactly one key" is part of the published schema, so clients (and schemathesis)
    # know an empty or a two-key body is invalid
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "minProperties": 1, "maxProperties": 1,
        "oneOf": [{"required": ["answer"]}, {"required": ["accept"]},
                  {"required": ["reject"]}]})
    answer: Literal["yes", "no"] | SkipJsonSchema[None] = None
    accept: ExternalId | int | SkipJsonSchema[None] = None
    reject: Literal[True] | SkipJsonSchema[None] = None

    def as_dict(self) -> dict[str, Any]:
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of answer, accept, reject")
        return given


class AskOut(BaseModel):
    attribute_id: int
    name: str = Field(description="the attribute's readable name")


class ListedItem(BaseModel):
    item_id: str
    score: float
    reason: str


class DoneOut(BaseModel):
    accepted: str | None = Field(description="the accepted item; null when the turn limit "
                                             "ended the conversation")
    reason: str | None = None


class TurnOut(BaseModel):
    """Exactly one of: a question, a list, or the end."""

    ask: AskOut | None = None
    recommend: list[ListedItem] | None = None
    done: DoneOut | None = None


class ConversationOut(BaseModel):
    conversation_id: str
    turn: TurnOut
