"""What each event type means: its weight, whether it is negative feedback.

Training applies these semantics with :func:`userlens.data.filters.event_weights`; the
artefact stores them in its manifest and the service applies the same rules to every history
it scores (:meth:`EventSemantics.apply`), so a posted ``dislike`` means online what it meant
in training.
"""

from __future__ import annotations

from pydantic import BaseModel


class EventSemantics(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    """Event types, weights and negative feedback, as saved in an artefact's manifest."""

    known_types: list[str] | None = None
    """Types the model was trained with; None when the log had no type column (then any
    type is accepted with weight 1, unless it is named below)."""
    weights: dict[str, float] = {}
    """Type -> weight; an event's value in the history becomes its type's weight."""
    negative_types: list[str] = []
    """Dislike-style types: never a positive, and they cancel the user's earlier events on
    the same item."""

    def uses_types(self) -> bool:
        """Whether an event's type changes how it is scored (weights or negatives)."""
        return bool(self.weights or self.negative_types)

    def problem(self, event_type: str | None) -> str | None:
        """Why an event of this type cannot be accepted, or None when it can."""
        if event_type is None or self.known_types is None:
            return None
        if event_type in self.known_types or event_type in self.weights \
                or event_type in self.negative_types:
            return None
        return (f"unknown event type {event_type!r}; the model knows "
                f"{sorted(set(self.known_types) | set(self.weights) | set(self.negative_types))}")

    def is_negative(self, event_type: str | None) -> bool:
        return event_type is not None and event_type in self.negative_types

    def weight(self, event_type: str | None) -> float:
        return 1.0 if event_type is None else float(self.weights.get(event_type, 1.0))

    def apply(self, events: list[tuple[str, str | None]]) -> tuple[list[str], list[float]]:
        """A history as the model saw it in training: ``events`` are (item, type), oldest
        first; negatives are removed together with every earlier event on their item, and
        each remaining event carries its type's weight.

        Returns:
            (items, weights), oldest first.
        """
        if not self.uses_types():
            return [item for item, _ in events], [1.0] * len(events)
        positions, weights = self.kept(events)
        return [events[p][0] for p in positions], weights

    def kept(self, events: list[tuple[str, str | None]]) -> tuple[list[int], list[float]]:
        """Positions of the events :meth:`apply` keeps, and their weights."""
        last_negative: dict[str, int] = {}
        for position, (item, event_type) in enumerate(events):
            if self.is_negative(event_type):
                last_negative[item] = position
        positions, weights = [], []
        for position, (item, event_type) in enumerate(events):
            if self.is_negative(event_type) or position < last_negative.get(item, -1):
                continue
            positions.append(position)
            weights.append(self.weight(event_type))
        return positions, weights
