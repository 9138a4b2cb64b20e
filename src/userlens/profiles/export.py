"""Every user's profile of a dataset, as rows (``userlens profiles export``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

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

CHUNK = 250
"""Users per task when profiles are built in several processes."""

T = TypeVar("T")


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
           item_noun: str = "item", workers: int = 1,
           **options: Any) -> tuple[int, float]:
    """Build every user's profile and write them to a Parquet file, one row per user.

    With ``llm``, each summary is written by that model and checked (unfaithful ones are
    replaced by the template; the row's ``summary_source`` says which), one user at a time.
    Without, ``workers`` processes build the profiles (see :func:`each_profile`).

    Returns:
        (users written, seconds).
    """
    started = time.perf_counter()
    events = dataset.interactions
    population = population or population_of(dataset, fields=fields)
    convert = _export_row
    if llm is not None:  # in this process (the client stays here), one user at a time
        checker = FaithfulnessChecker(population)

        def convert(user: int, profile: Profile) -> dict[str, Any]:
            written = summarise(profile, population, llm, checker=checker,
                                item_noun=item_noun)
            return row(profile.model_copy(update={"summary": written.summary}))

        workers = 1
    rows = each_profile(events, dataset.items.ids, population, convert,
                        user_ids=dataset.users.ids, workers=workers, progress=progress,
                        **options)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.select("user_id", *[c for c in frame.columns if c != "user_id"]).write_parquet(out)
    return len(rows), time.perf_counter() - started


def _export_row(user: int, profile: Profile) -> dict[str, Any]:
    return row(profile)


def each_profile(events: Interactions, items: list[str] | np.ndarray, population: Population,
                 convert: Callable[[int, Profile], T], *, user_ids: np.ndarray | None = None,
                 workers: int = 1,
                 progress: Callable[[int, int], None] | None = None, **options: Any
                 ) -> list[T]:
    """``convert(user index, profile)`` for every user with events, in user order.

    With ``workers`` > 1, that many processes build the profiles in chunks of :data:`CHUNK`
    users; ``convert`` runs there too, so it must be a module-level function. They are
    spawned, which re-runs a calling script's top level: call from under
    ``if __name__ == "__main__":`` (the CLI does), hence one process by default.
    The results are those of one process, in the same order. Each worker has one BLAS
    thread: with the library's own threads on top, two workers took longer than one
    process (49 s against 33 s for ML-1M's 6,040 users). ``options`` go to :func:`build`;
    ``user_ids`` name the profiles (default: none).
    """
    users = ((user, None if user_ids is None else str(user_ids[user]), frame)
             for user, frame in user_events(events, items))
    n_users = int(len(np.unique(events.user_idx)))
    n_workers = min(workers, -(-n_users // CHUNK))
    report = progress or (lambda done, total: None)
    out: list[T] = []
    if n_workers <= 1:
        for user, user_id, frame in users:
            out.append(convert(user, build(frame, population, user_id=user_id,
                                           has_time=events.has_time, **options)))
            if len(out) % 200 == 0 or len(out) == n_users:
                report(len(out), n_users)
        return out
    with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"),
                             initializer=_start_worker,
                             initargs=(population, events.has_time, convert, options)) as pool:
        for chunk in pool.map(_convert_chunk, _chunked(users, CHUNK)):
            out.extend(chunk)
            report(len(out), n_users)
    return out


def _chunked(users: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for user in users:
        chunk.append(user)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_WORKER: dict[str, Any] = {}
"""A worker process's population, conversion and build options (set once, at its start)."""


def _start_worker(population: Population, has_time: bool, convert: Callable[..., Any],
                  options: dict[str, Any]) -> None:
    from threadpoolctl import threadpool_limits

    # one BLAS thread per worker: the workers already fill the cores
    _WORKER.update(population=population, has_time=has_time, convert=convert,
                   options=options, limits=threadpool_limits(1))


def _convert_chunk(chunk: list[tuple[int, str | None, pl.DataFrame]]) -> list[Any]:
    population, convert = _WORKER["population"], _WORKER["convert"]
    return [convert(user, build(frame, population, user_id=user_id,
                                has_time=_WORKER["has_time"], **_WORKER["options"]))
            for user, user_id, frame in chunk]
