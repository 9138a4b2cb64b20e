"""Profiles in the service: built from the stored history with the model's event semantics,
the user's controls applied, LLM summaries generated off the request path and cached per
profile version."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import numpy as np
import polars as pl

from userlens.llm import ChatClient, LLMConfig, LLMError, api_key, connect
from userlens.models.base import Capability
from userlens.profiles import build
from userlens.profiles.build import events_of
from userlens.profiles.controls import Controls, ControlsPatch, parse_key
from userlens.profiles.explain import explain, serving_interest
from userlens.profiles.facets import Events, interests
from userlens.profiles.llm_summary import summarise
from userlens.profiles.population import Population
from userlens.profiles.types import Profile, Stated, Summary
from userlens.serving.engine import Scored
from userlens.serving.service import Service

logger = logging.getLogger(__name__)


class UnknownUser(LookupError):
    """No stored events and no controls for this user."""


class Profiles:
    """Profile, controls and explanation logic behind the routes."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._client: ChatClient | None = None
        self._client_lock = threading.Lock()
        self._pending: set[tuple[str, str]] = set()
        self._pending_lock = threading.Lock()
        self.stated: Callable[[str], list[Stated]] | None = None
        """What a user said in conversations (set when the service serves a conversation
        model); part of the profile."""

    # ------------------------------------------------------------------ profiles

    def events(self, user_id: str) -> pl.DataFrame:
        """The user's newest events with the model's event semantics applied."""
        service = self.service
        stored = service.storage.history(user_id, limit=service.settings.max_profile_events)
        semantics = service.engine.semantics
        positions, weights = semantics.kept([(e.item_id, e.type) for e in stored])
        kept = [stored[p] for p in positions]
        return pl.DataFrame({"item_id": [e.item_id for e in kept],
                             "timestamp": [e.ts_ms / 1000 for e in kept],
                             "weight": weights}, schema={"item_id": pl.String,
                                                         "timestamp": pl.Float64,
                                                         "weight": pl.Float64})

    def profile(self, user_id: str) -> Profile:
        """The user's profile with the template summary (or the cached LLM one).

        Raises:
            UnknownUser: nothing is stored for the user.
        """
        controls_json = self.service.storage.controls(user_id)
        events = self.events(user_id)
        stated = self.stated(user_id) if self.stated is not None else []
        if events.is_empty() and controls_json is None and not stated:
            raise UnknownUser(user_id)
        engine = self.service.engine
        return build(events, engine.population, user_id=user_id,
                     controls=Controls.from_json(controls_json), has_time=True,
                     stated=stated, interest_vectors=self.interest_vectors(events))

    def interest_vectors(self, events: pl.DataFrame) -> np.ndarray | None:
        """(K, d) the multi-interest model's interests for these events (None for other
        models, or when the profile's item vectors are not the model's)."""
        engine = self.service.engine
        if (not engine.model.can(Capability.INTERESTS) or events.is_empty()
                or engine.population.vector_source != "model"):
            return None
        histories, _ = engine.encode(events["item_id"].to_list(), events["weight"].to_list())
        if histories.lengths()[0] == 0:
            return None
        return engine.model.interest_vectors(histories)[0]

    def cached_summary(self, profile: Profile) -> Summary | None:
        found = self.service.storage.summary(profile.user_id, profile.version)
        return Summary(**found) if found else None

    def claim(self, profile: Profile) -> bool:
        """True when no generation of this profile version is running (and claims it)."""
        key = (profile.user_id, profile.version)
        with self._pending_lock:
            if key in self._pending:
                return False
            self._pending.add(key)
            return True

    def generate_summary(self, profile: Profile) -> None:
        """Write an LLM summary for this profile version and cache it (background task).
        An unfaithful draft is counted and the template is cached in its place."""
        service = self.service
        try:
            client = self.client()
            written = summarise(profile, service.engine.population, client,
                                item_noun=service.settings.item_noun)
        except LLMError as error:
            logger.warning("LLM summary for %s failed: %s", profile.user_id, error)
            service.metrics.summaries.labels("failed").inc()
            return
        finally:
            with self._pending_lock:
                self._pending.discard((profile.user_id, profile.version))
        service.metrics.summaries.labels("rejected" if written.rejected else "accepted").inc()
        s = written.summary
        service.storage.put_summary(profile.user_id, profile.version, s.text, s.source,
                                    s.model)

    def client(self) -> ChatClient:
        with self._client_lock:
            if self._client is None:
                settings = self.service.settings
                config = LLMConfig(base_url=settings.llm_base_url, model=settings.llm_model,
                                   api_key_env=settings.llm_api_key_env)
                self._client = connect(config, api_key=api_key(config, dict(os.environ)))
            return self._client

    # ------------------------------------------------------------------ controls

    def update_controls(self, user_id: str, patch: ControlsPatch) -> Controls:
        """Apply a merge-patch; ``forget`` deletes the user's events on those items now."""
        storage = self.service.storage
        current = Controls.from_json(storage.controls(user_id))
        updated = current.patched(patch)
        if patch.forget:
            items = sorted({parse_key(entry, items_only=True)[1] for entry in patch.forget})
            storage.forget_items(user_id, items, updated.to_json())
            self.service.refresh_trending()
            return Controls.from_json(storage.controls(user_id))
        storage.set_controls(user_id, updated.to_json())
        return updated

    # ------------------------------------------------------------------ explanations

    def explain(self, history: list[str], weights: list[float] | None,
                items: list[Scored], top: int = 3
                ) -> list[tuple[list[tuple[str, float]], str | None]]:
        """For each recommended item: (history items that drove it with weights, the
        profile interest it serves as field:value)."""
        engine = self.service.engine
        population = engine.population
        histories, _ = engine.encode(history, weights)
        index = histories.item_idx
        values = histories.value
        targets = engine.items.indices_of([s.item_id for s in items])
        scored = np.flatnonzero(targets >= 0)
        reasons = explain(engine.model, index, targets[scored], values=values, top=top)
        by_position = dict(zip(scored.tolist(), reasons, strict=True))
        events = build_events(history, weights, population)
        found = interests(events, population)
        out = []
        for position, target in enumerate(targets.tolist()):
            because = [(engine.items.ids[b.item_index], round(b.weight, 6))
                       for b in by_position.get(position, [])]
            interest = serving_interest(target, found, population) if target >= 0 else None
            out.append((because, interest))
        return out


def build_events(history: list[str], weights: list[float] | None,
                 population: Population) -> Events:
    frame = pl.DataFrame({"item_id": history,
                          "weight": weights if weights is not None else [1.0] * len(history)},
                         schema={"item_id": pl.String, "weight": pl.Float64})
    return events_of(frame, population)
