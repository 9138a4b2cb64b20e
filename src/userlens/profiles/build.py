"""``build``: one user's events + the population -> a :class:`Profile`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import polars as pl

from userlens.profiles.clusters import clusters as find_clusters
from userlens.profiles.controls import Controls
from userlens.profiles.facets import Events, behaviour, covering, interests
from userlens.profiles.population import Population, as_polars
from userlens.profiles.summary import template
from userlens.profiles.types import SCHEMA_VERSION, Profile, Stated, Summary

TIME_COLUMNS = ("timestamp", "ts", "time", "datetime")
WEIGHT_COLUMNS = ("weight", "value", "rating")


def events_of(history: Any, population: Population, *, has_time: bool | None = None
              ) -> Events:
    """A user's events from a DataFrame (polars or pandas: ``item_id``, optional
    ``timestamp`` in seconds or datetimes, optional ``weight``), or a list of item ids,
    oldest first."""
    if isinstance(history, list | tuple):
        frame = pl.DataFrame({"item_id": [str(i) for i in history]})
    else:
        frame = as_polars(history)
    if "item_id" not in frame.columns:
        raise ValueError(f"a history needs an item_id column (columns: {frame.columns})")
    item_ids = frame["item_id"].cast(pl.String).to_list()
    time_column = next((c for c in TIME_COLUMNS if c in frame.columns), None)
    if time_column is None:
        times, timed = np.arange(len(frame), dtype=np.float64), False
    else:
        column = frame[time_column]
        if column.dtype.is_temporal():
            column = column.dt.epoch("ms") / 1000
        times = column.cast(pl.Float64).to_numpy().copy()
        timed = True if has_time is None else has_time
        order = np.argsort(times, kind="stable")
        times, item_ids = times[order], [item_ids[i] for i in order]
        frame = frame[order.tolist()]
    weight_column = next((c for c in WEIGHT_COLUMNS if c in frame.columns), None)
    weights = (np.ones(len(frame)) if weight_column is None
               else frame[weight_column].cast(pl.Float64).fill_null(1.0).to_numpy().copy())
    return Events(item_ids=item_ids, index=population.items.indices_of(item_ids),
                  time=times, weight=weights, has_time=timed)


def version(events: Events, population: Population, controls: Controls,
            stated: list[Stated] | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([SCHEMA_VERSION, fingerprint(population), controls.to_json(),
                              events.has_time]).encode())
    if stated:
        digest.update(json.dumps([s.model_dump() for s in stated]).encode())
    digest.update("\x1f".join(events.item_ids).encode())
    digest.update(np.ascontiguousarray(events.time, np.float64).tobytes())
    digest.update(np.ascontiguousarray(events.weight, np.float64).tobytes())
    return digest.hexdigest()[:16]


def fingerprint(population: Population) -> str:
    """Identity of a population (items, popularity, fields, vectors), cached on it."""
    cached = population.__dict__.get("_fingerprint")
    if cached is None:
        digest = hashlib.sha256()
        digest.update("\x1f".join(population.items.ids.tolist()).encode())
        digest.update(np.ascontiguousarray(population.popularity, np.float64).tobytes())
        digest.update(json.dumps([(f.name, len(f.values)) for f in population.fields]).encode())
        digest.update(str(population.vector_source).encode())
        cached = population.__dict__["_fingerprint"] = digest.hexdigest()[:16]
    return cached


def build(history: Any, population: Population, *, user_id: str | None = None,
          controls: Controls | None = None, has_time: bool | None = None,
          max_evidence: int = 10, max_interests_per_field: int = 10, max_clusters: int = 4,
          session_gap_minutes: float = 30.0, seed: int = 0,
          stated: list[Stated] | None = None, interest_vectors: np.ndarray | None = None
          ) -> Profile:
    """Build a user's profile from their events.

    Args:
        history: the user's events (see :func:`events_of`), with the event semantics already
            applied (negative events removed, weights as ``weight``).
        population: items, popularity, catalogue fields and item vectors
            (:class:`Population`).
        controls: the user's steering controls; muted and boosted values are flagged.
        has_time: whether timestamps are real times (default: when a time column exists).
        stated: what the user answered in conversations (:class:`Stated`, newest first).
        interest_vectors: (K, d) the user's interest vectors from a multi-interest model whose item
            embeddings are the population's vectors: the clusters are then its interests.

    Returns:
        The profile with the template summary (see ``userlens.profiles.llm`` for the LLM one).
    """
    controls = Controls() if controls is None else controls
    events = events_of(history, population, has_time=has_time)
    found = _flag(interests(events, population, max_per_field=max_interests_per_field,
                            max_evidence=max_evidence), controls)
    groups = find_clusters(events, population, max_clusters=max_clusters,
                           max_evidence=max_evidence, seed=seed, interest_vectors=interest_vectors)
    habits = behaviour(events, population, session_gap_minutes=session_gap_minutes)
    out = controls.out()
    main = population.fields[0] if population.fields else None
    top = ([f"{main.name}:{main.values[j]}" for j in covering(events, main)]
           if main is not None and (events.index >= 0).any() else [])
    return Profile(
        user_id=user_id, version=version(events, population, controls, stated),
        as_of=float(events.time.max()) if events.has_time and len(events) else None,
        interests=found, top_interests=top, clusters=groups,
        cluster_source="model interests" if interest_vectors is not None and groups
        else population.vector_source,
        behaviour=habits, summary=Summary(text=template(found, groups, habits, out, stated),
                                          source="template"),
        controls=out, stated=stated or [])


def _flag(found: list, controls: Controls) -> list:
    if not controls:
        return found
    muted = set(controls.muted_values())
    boosts = dict(controls.boosted_values())
    out = []
    for interest in found:
        key = (interest.field.lower(), interest.value.lower())
        out.append(interest.model_copy(update={"muted": key in muted,
                                               "boost": boosts.get(key)}))
    return out
