"""Every user's profile of a dataset, as rows (``userlens profiles export``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from userlens.data.cooccurrence import cooccurrence_vectors
from userlens.data.interactions import Dataset, Interactions
from userlens.llm import ChatClient
from userlens.profiles.build import build
from userlens.profiles.llm_summary import summarise
from userlens.profiles.population import Population
from userlens.profiles.summary import FaithfulnessChecker
from userlens.profiles.types import Profile


def population_of(dataset: Dataset, events: Interactions | None = None, *,
                  fields: list[str] | None = None, vector_dim: int = 32, seed: int = 0
                  ) -> Population:
    """The population of a dataset: popularity and co-occurrence vectors from ``events``
    (default: all of the dataset's), values from its catalogue."""
    events = events if events is not None else dataset.interactions
    catalog = dataset.catalog.frame if dataset.catalog is not None else None
    return Population.build(dataset.items, events.item_counts(), catalog, fields=fields,
                            vectors=cooccurrence_vectors(events, vector_dim, seed=seed),
                            vector_source="co-occurrence")


def user_events(events: Interactions, items: list[str] | np.ndarray
                ) -> Iterator[tuple[int, pl.DataFrame]]:
    """(user index, their events oldest first as a DataFrame) for every user with events."""
    order = events.chronological_order()
    users = events.user_idx[order]
    ids = np.asarray(items, dtype=object)
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(order)]
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        rows = order[start:stop]
        yield int(users[start]), pl.DataFrame({
            "item_id": ids[events.item_idx[rows]].tolist(),
            "timestamp": events.timestamp[rows].astype(np.float64),
            "weight": events.value[rows].astype(np.float64)})


def row(profile: Profile) -> dict[str, Any]:
    """One export row: the profile's JSON with the summary and counts flattened."""
    data = profile.model_dump(mode="json")
    data["n_events"] = int(profile.behaviour.events.value or 0)
    data["summary_text"] = profile.summary.text
    data["summary_source"] = profile.summary.source
    del data["summary"]
    # Parquet has no maps with free keys: boosts become a list of (value, factor)
    data["controls"]["boost"] = [{"value": k, "factor": f}
                                 for k, f in profile.controls.boost.items()]
    return data


def export(dataset: Dataset, out: Path, *, population: Population | None = None,
           progress: Callable[[int, int], None] | None = None,
           fields: list[str] | None = None, llm: ChatClient | None = None,
           item_noun: str = "item", **options: Any) -> tuple[int, float]:
    """Build every user's profile and write them to a Parquet file, one row per user.

    With ``llm``, each summary is written by that model and checked (unfaithful ones are
    replaced by the template; the row's ``summary_source`` says which).

    Returns:
        (users written, seconds).
    """
    started = time.perf_counter()
    events = dataset.interactions
    population = population or population_of(dataset, fields=fields)
    checker = FaithfulnessChecker(population) if llm is not None else None
    rows = []
    n_users = int(len(np.unique(events.user_idx)))
    user_ids = dataset.users.ids
    for done, (user, frame) in enumerate(user_events(events, dataset.items.ids), start=1):
        profile = build(frame, population, user_id=str(user_ids[user]),
                        has_time=events.has_time, **options)
        if llm is not None:
            written = summarise(profile, population, llm, checker=checker,
                                item_noun=item_noun)
            profile = profile.model_copy(update={"summary": written.summary})
        rows.append(row(profile))
        if progress is not None and (done % 200 == 0 or done == n_users):
            progress(done, n_users)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.select("user_id", *[c for c in frame.columns if c != "user_id"]).write_parquet(out)
    return len(rows), time.perf_counter() - started
