"""The profile's typed schema: what each fact is, its evidence and its explanation.

These pydantic models are the JSON the service returns (the OpenAPI spec documents each
field from the docstrings below), the rows ``profiles export`` writes, and what
``userlens.profiles.build`` returns in a notebook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
"""Bumped when a fact's meaning changes; part of every profile's ``version``."""


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


class Interest(_Fact):
    """A catalogue value the user's events concentrate on."""

    field: str
    """Catalogue field (column), e.g. ``categories`` or ``brand``."""
    value: str
    """The value, e.g. ``Comedy``; ``field:value`` is the filter and control syntax."""
    share: float
    """Share of the user's events on items with this value (0-1)."""
    population_share: float
    """The same share over every training event (the population)."""
    lift: float
    """share / population_share: above 1, more than the population."""
    count: int
    """The user's events on items with this value."""
    last_seen: float
    """Timestamp (seconds) of the newest such event; its position when times are not real."""
    events_since: int
    """The user's events after the newest such event (0: the latest event has it)."""
    recent_share: float
    """Share among the user's recent events (the newest fifth, at least 10)."""
    evidence: list[str]
    """Item ids of the supporting events, newest first (at most ``max_evidence``)."""
    muted: bool = False
    """The user muted this value (it is never recommended)."""
    boost: float | None = None
    """The user's boost factor for this value, if any."""
    explanation: str
    """One line a person can read."""


class Cluster(_Fact):
    """A group of the user's items close together in item-vector space (one interest)."""

    label: list[str]
    """Dominant catalogue values of the group as ``field:value`` (may be empty)."""
    items: list[str]
    """Most representative item ids (closest to the group's centre)."""
    titles: list[str]
    """Their readable names."""
    weight: float
    """Share of the user's events in this group."""
    size: int
    """Distinct items in the group."""
    last_seen: float
    """Timestamp (or position) of the group's newest event."""
    evidence: list[str]
    """Item ids of the group's events, newest first (at most ``max_evidence``)."""
    explanation: str


class Measure(_Fact):
    """One behaviour measure: a value (None when the data cannot tell) and what it means."""

    value: float | None
    explanation: str


class Behaviour(_Fact):
    """How the user behaves, independent of what they like."""

    events: Measure
    """Events in the history."""
    distinct_items: Measure
    active_days: Measure
    """Calendar days (UTC) with at least one event (real timestamps only)."""
    span_days: Measure
    """Days from the first to the last event (real timestamps only)."""
    sessions: Measure
    """Runs of events separated by more than the session gap (real timestamps only)."""
    peak_hour: Measure
    """Hour of day (UTC, 0-23) with the most events (real timestamps only)."""
    peak_weekday: Measure
    """Day of week with the most events, 0 = Monday (real timestamps only)."""
    hour_of_day: list[float] | None
    """Share of events in each UTC hour (24 values; None without real timestamps)."""
    day_of_week: list[float] | None
    """Share of events on each weekday, Monday first (7 values)."""
    popularity_percentile: Measure
    """Mean popularity percentile of the user's items (100: the most popular item);
    low values mean novelty-seeking."""
    diversity: Measure
    """Entropy of the user's mix over the main field's values, divided by its maximum
    (log of the number of values): 0 one value only, 1 evenly spread."""
    repeat_ratio: Measure
    """Share of events on an item the user had already had."""
    mainstreamness: Measure
    """1 - Jensen-Shannon divergence (base 2) between the user's and the population's mix
    over the main field: 1 exactly like everyone, 0 nothing in common."""
    drift: Measure
    """Jensen-Shannon divergence (base 2) between the recent mix (newest fifth, at least 10
    events) and the earlier one: 0 stable, 1 completely changed."""


class Summary(_Fact):
    text: str
    source: Literal["template", "llm"]
    """``template`` (deterministic, faithful by construction) or ``llm`` (checked)."""
    model: str | None = None
    """The language model that wrote it (llm only)."""
    pending: bool = False
    """An LLM summary was asked for and is being written; this is the template meanwhile
    (ask again)."""


class ControlsOut(_Fact):
    """The user's steering controls in force."""

    mute: list[str] = Field(default_factory=list)
    """``field:value`` or ``item:ID`` never recommended to this user."""
    boost: dict[str, float] = Field(default_factory=dict)
    """``field:value`` -> factor: a boosted item's rank among the candidates is divided by
    the factor (2 moves rank 10 to 5)."""
    forgotten: int = 0
    """Events the user asked to forget (removed from storage; only the count is kept)."""


class Stated(_Fact):
    """An attribute the user answered about in conversations (``POST /conversations``):
    what they said, not what their events show."""

    attribute: str
    """The attribute's readable name (as the conversation asked it)."""
    attribute_id: int
    """The attribute's id in the conversation model."""
    answer: Literal["yes", "no"]
    """The user's latest answer about it."""
    times: int
    """How many times they were asked about it, in all their conversations."""
    last_stated: float
    """When they last answered (seconds since the epoch)."""
    explanation: str


class Profile(_Fact):
    """Who the user is, from their events, in facts with evidence."""

    user_id: str | None
    version: str
    """Hash of the events, controls, population and schema it was built from."""
    schema_version: int = SCHEMA_VERSION
    as_of: float | None
    """Timestamp (seconds) of the newest event (None: no real timestamps)."""
    interests: list[Interest]
    """Strongest first (share, then lift)."""
    top_interests: list[str]
    """``field:value``: the three values of the main field that together cover most of the
    user's events (greedy set cover, smoothed towards the population); what predicts their
    next events best (docs/profiles.md)."""
    clusters: list[Cluster]
    cluster_source: str | None
    """Item vectors the clusters were found in: ``model`` embeddings, ``co-occurrence``,
    ``model interests`` (a multi-interest model's own interests, each item in the one that
    scores it highest), or None (no vectors available: no clusters)."""
    behaviour: Behaviour
    summary: Summary
    controls: ControlsOut
    stated: list[Stated] = Field(default_factory=list)
    """What the user said in conversations: attributes confirmed ("yes") or declined
    ("no"), newest first; empty when the service has no conversation model."""
