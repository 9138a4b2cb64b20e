"""What the service does, without HTTP: histories with their event semantics, model items
blended with fallbacks, trending, reloads. Route handlers call these methods and stay short.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from userlens.audits.rerank import parse as parse_rerank
from userlens.audits.rerank import rerank
from userlens.profiles.controls import Controls
from userlens.serving.engine import ArtefactError, Engine, Filter, Scored
from userlens.serving.observability import Metrics
from userlens.serving.settings import KeyRing, ServeSettings
from userlens.serving.storage import Storage, now_ms

logger = logging.getLogger(__name__)


class ReloadRefused(Exception):
    """A reload was refused; ``reason`` is safe to show (no paths, no file contents)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidFilter(ValueError):
    """A filter expression is malformed."""


NO_FILTER = Filter()


@dataclass(frozen=True)
class UserHistory:
    """A stored history as the model reads it (semantics applied) and what counts as seen."""

    items: list[str]
    weights: list[float] | None
    """Per-event weights; None = all 1."""
    seen: list[str]
    controls: Controls = Controls()
    """The user's steering controls (read with the history, in one connection)."""


def load_engine(path: str | Path, settings: ServeSettings) -> Engine:
    """Load an artefact with the service's history, ANN, size and thread settings."""
    return Engine.load(path, max_history=settings.max_history,
                       ann_min_items=settings.ann_min_items, ann_kind=settings.ann_kind,
                       ann_depth=settings.ann_depth, torch_threads=settings.torch_threads,
                       max_bytes=settings.max_artefact_bytes)


def served_state(engine: Engine) -> dict[str, str]:
    return {"path": str(Path(engine.path).resolve()), "version": engine.version}


class Service:
    """Mutable state behind the app: the current engine and the caches that refresh."""

    def __init__(self, engine: Engine, storage: Storage, settings: ServeSettings) -> None:
        self.engine = engine
        self.storage = storage
        self.settings = settings
        self.keys = KeyRing(settings.keys())
        self.metrics = Metrics()
        self.metrics.set_model(engine.model.name, engine.version)
        self._reload_lock = threading.Lock()
        self._trending: list[tuple[str, int]] = []
        self._trending_lock = threading.Lock()
        self._trending_wanted = False  # the app computes it once at start
        self._fields_version = storage.items_version()
        self._fields: dict[str, dict[str, Any]] = storage.item_fields()
        self._fields_stamp = 0
        self._rerank = parse_rerank(settings.rerank) if settings.rerank else None
        self.engine = self._grown(engine, list(self._fields.items()))

    # --------------------------------------------------------------- caches

    def stored_fields(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Item metadata posted to /items (this worker's copy; no database access)."""
        return self._fields, self._fields_stamp

    def refresh_fields(self) -> None:
        """Read /items again when another worker wrote (a one-row query says whether);
        called off the request path."""
        version = self.storage.items_version()
        if version != self._fields_version:
            self._fields_version = version
            self._fields, self._fields_stamp = (self.storage.item_fields(),
                                                self._fields_stamp + 1)
            self.grow(list(self._fields.items()))

    def note_items(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        """This worker's copy of posted item metadata, and the model grown by the new items
        it can score from their text."""
        fields = dict(self._fields)
        fields.update(records)
        self._fields, self._fields_stamp = fields, self._fields_stamp + 1
        self.grow(records)

    def grow(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Swap in an engine that also scores the posted items a text model can score from
        their text (``Engine.with_items``); the other workers do the same when they read
        the items (:meth:`refresh_fields`), and a reload keeps them."""
        with self._reload_lock:
            self.engine = self._grown(self.engine, records)

    @staticmethod
    def _grown(engine: Engine, records: list[tuple[str, dict[str, Any]]]) -> Engine:
        """``engine`` with the items it can add (itself when none, or when adding fails:
        those items stay catalogue-only, served as new items by the fallback)."""
        try:
            return engine.with_items(records) or engine
        except (ArtefactError, ImportError, OSError, RuntimeError, ValueError) as error:
            logger.warning("posted items not added to the model, still served as new items: "
                           "%s: %s", type(error).__name__, error)
            return engine

    def refresh_trending(self) -> None:
        """Recompute trending: positive events in the window, up to now, on items the model
        or the posted catalogue knows (called off the request path)."""
        now = now_ms()
        since = now - int(self.settings.trending_window_hours * 3_600_000)
        engine, limit = self.engine, self.settings.max_k
        found = self.storage.trending(since, 4 * limit, until_ms=now,
                                      negative_types=engine.semantics.negative_types)
        fields = self.stored_fields()[0]
        known = [(item, n) for item, n in found
                 if engine.items.index_of(item) is not None or item in fields]
        with self._trending_lock:
            self._trending = known[:limit]

    def refresh_trending_if_used(self) -> None:
        """The background task's refresh: only when a fallback read trending since the last
        refresh (counting a week of events costs CPU that known users' requests need)."""
        if self._trending_wanted:
            self._trending_wanted = False
            self.refresh_trending()

    def trending(self) -> list[tuple[str, int]]:
        if self.settings.trending_cache_seconds == 0:
            self.refresh_trending()
        self._trending_wanted = True
        with self._trending_lock:
            return self._trending

    # --------------------------------------------------------------- events and users

    def event_problem(self, event_type: str | None) -> str | None:
        """Why the served model cannot take an event of this type (None: it can)."""
        return self.engine.semantics.problem(event_type)

    def user_history(self, user_id: str) -> UserHistory:
        """The user's newest events with the training semantics applied: negatives cancel
        earlier events on their item, weights become values; every stored item counts as
        seen."""
        engine = self.engine
        if not engine.semantics.uses_types():  # the hot path reads one column
            items, controls = self.storage.history_items_and_controls(
                user_id, limit=self.settings.max_history)
            return UserHistory(items, None, items, Controls.from_json(controls))
        events, controls = self.storage.history_events_and_controls(
            user_id, limit=self.settings.max_history)
        items, weights = engine.semantics.apply(events)
        # nothing cancelled: the scored items are every stored item (one list, one lookup)
        seen = items if len(items) == len(events) else [item for item, _ in events]
        return UserHistory(items, weights, seen, Controls.from_json(controls))

    def erase(self, user_id: str) -> dict[str, int]:
        """Erase a user everywhere, including this process's caches (trending)."""
        removed = self.storage.erase_user(user_id)
        self.refresh_trending()
        return removed

    # --------------------------------------------------------------- recommendations

    async def filter_mask(self, expressions: list[str], controls: Controls | None = None
                          ) -> tuple[Filter, np.ndarray | None]:
        """The parsed filter and its mask over the model's items, with the user's muted
        values and items removed. A mask not cached yet is built in the thread pool (one
        pass over the catalogue), never on the event loop.

        Raises:
            InvalidFilter: a malformed filter expression.
        """
        try:
            where = Filter.parse(expressions)
        except ValueError as error:
            raise InvalidFilter(str(error)) from error
        mask = await self._mask(where) if where else None
        if controls is not None and controls.mute:
            mask = np.ones(self.engine.n_items, bool) if mask is None else mask.copy()
            for condition in controls.muted_values():
                mask &= ~await self._mask(Filter((condition,)))
            index = self.engine.items.indices_of(sorted(controls.muted_items()))
            mask[index[index >= 0]] = False
        return where, mask

    async def _mask(self, where: Filter) -> np.ndarray:
        engine = self.engine
        fields, stamp = self.stored_fields()
        mask = engine.cached_mask(where, stamp)
        if mask is None:
            mask = await run_in_threadpool(engine.allowed, where, fields, stamp)
        return mask

    def recommend(self, history: list[str], k: int, exclude_seen: bool,
                  where: Filter = NO_FILTER, allowed: np.ndarray | None = None,
                  weights: list[float] | None = None, seen: list[str] | None = None,
                  controls: Controls | None = None) -> tuple[list[Scored], int, bool]:
        """Model items first, then fallback items until k; (items, skipped, fallback only).
        ``where`` and ``allowed`` come from :meth:`filter_mask` (which removes muted items
        from ``allowed``); ``controls`` also keep muted items out of the fallbacks, and their
        boosts divide each candidate's rank by the factor before the top k are taken."""
        engine = self.engine
        seen = history if seen is None else seen
        boosting = controls is not None and bool(controls.boost)
        want = min(k * int(np.ceil(controls.max_boost())), k + 1000) if boosting else k
        reranking = self._rerank is not None
        fetch = max(want, self.settings.rerank_candidates) if reranking else want
        items, skipped, personalised = engine.recommend(
            history, fetch, exclude_seen=exclude_seen, allowed=allowed, weights=weights,
            seen=seen)
        if reranking:
            items = self._reranked(items, history, want)
        if len(items) < want:
            items += self.fallback(engine, want - len(items), seen if exclude_seen else [],
                                   {s.item_id for s in items}, where, allowed, controls)
        if boosting:
            items = self._boosted(items, controls)[:k]
        if not personalised:
            self.metrics.fallbacks.inc()
        return items, skipped, not personalised

    def _reranked(self, items: list[Scored], history: list[str], k: int) -> list[Scored]:
        """The configured re-ranker's k of the model's candidates (``rerank`` setting)."""
        if len(items) <= 1:
            return items[:k]
        engine = self.engine
        kind, weight = self._rerank
        index = engine.items.indices_of([s.item_id for s in items])
        scores = np.array([s.score for s in items], np.float64)
        known = engine.items.indices_of(history)
        by_index = dict(zip(index.tolist(), items, strict=True))
        chosen = rerank(kind, weight, index, scores, known[known >= 0], engine.item_groups, k)
        return [by_index[i] for i in chosen.tolist()]

    def _boosted(self, items: list[Scored], controls: Controls) -> list[Scored]:
        """Candidates reordered by rank / boost factor (ties keep the model's order)."""
        engine, fields = self.engine, self.stored_fields()[0]
        boosts = [(Filter((condition,)), factor) for condition, factor
                  in controls.boosted_values()]
        items_boosted = controls.boosted_items()

        def factor(item_id: str) -> float:
            index = engine.items.index_of(item_id)
            found = fields.get(item_id) or (engine.catalog_fields(index)
                                            if index is not None else None)
            return max([f for where, f in boosts if where.matches(found)]
                       + [items_boosted.get(item_id, 1.0)])

        keyed = [((rank + 1) / factor(s.item_id), rank, s) for rank, s in enumerate(items)]
        return [s for _, _, s in sorted(keyed, key=lambda t: (t[0], t[1]))]

    def fallback(self, engine: Engine, k: int, seen: list[str], taken: set[str],
                 where: Filter, allowed, controls: Controls | None = None) -> list[Scored]:
        """Trending items (recent events), then training popularity, then new catalogue items."""
        skip = set(seen) | taken
        out: list[Scored] = []
        fields = self.stored_fields()[0]
        muted = ([Filter((condition,)) for condition in controls.muted_values()]
                 if controls is not None and controls.mute else [])
        if controls is not None and controls.mute:
            skip |= controls.muted_items()

        def admit(item_id: str) -> bool:
            if item_id in skip:
                return False
            index = engine.items.index_of(item_id)
            if allowed is not None and index is not None:
                if not allowed[index]:
                    return False
            elif where and not where.matches(fields.get(item_id)):
                return False
            if muted and index is None and any(m.matches(fields.get(item_id)) for m in muted):
                return False
            skip.add(item_id)
            return True

        for item_id, count in self.trending():
            if len(out) == k:
                return out
            if admit(item_id):
                out.append(Scored(item_id, float(count), "trending"))
        popularity = engine.model.popularity()
        for index in engine.popular().tolist():
            if len(out) == k:
                return out
            item_id = engine.items.ids[index]
            if admit(item_id):
                out.append(Scored(item_id, float(popularity[index]), "popular"))
        for item_id in fields:
            if len(out) == k:
                break
            if engine.items.index_of(item_id) is None and admit(item_id):
                out.append(Scored(item_id, None, "new"))
        return out

    # --------------------------------------------------------------- reloads

    def _reload_path(self, path: str | None) -> Path:
        if path is None:
            return Path(self.engine.path)
        root = self.settings.reload_root()
        try:
            resolved = Path(path).resolve()
        except (OSError, ValueError, RuntimeError):
            raise ReloadRefused("the path is not a directory under the artefact root") from None
        if resolved != root and root not in resolved.parents or not resolved.is_dir():
            raise ReloadRefused("the path is not a directory under the artefact root")
        return resolved

    def reload(self, path: str | None, *, announce: bool = True) -> tuple[Engine, str]:
        """Load a new artefact and swap it in; on any failure the old engine keeps serving.

        ``announce`` records the new artefact in the database, where the other worker
        processes find it (:meth:`follow`) and load it too.

        Raises:
            ReloadRefused: with a generic reason (details go to the log, not the client).
        """
        with self._reload_lock:
            previous = self.engine
            target = self._reload_path(path)
            try:
                engine = load_engine(target, self.settings)
            except (ArtefactError, OSError, ValueError, MemoryError) as error:
                logger.warning("reload of %s refused, still serving %s: %s", target,
                               previous.version, error)
                raise ReloadRefused("the artefact cannot be loaded") from error
            self.engine = engine = self._grown(engine, list(self._fields.items()))
            self.metrics.set_model(engine.model.name, engine.version)
            if announce:
                self.storage.set_state("artefact", served_state(engine))
            return engine, previous.version

    def follow(self) -> None:
        """Load the artefact another worker announced, if it differs from ours."""
        state = self.storage.get_state("artefact")
        if state and state.get("version") != self.engine.version:
            logger.info("worker %d follows the reload to %s", os.getpid(), state["version"])
            try:
                self.reload(state["path"], announce=False)
            except ReloadRefused as error:
                logger.warning("could not follow the reload to %s: %s", state["path"], error)
