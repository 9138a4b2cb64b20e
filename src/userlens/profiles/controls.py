"""A user's steering controls: mute a value or an item, boost a value, forget events.

Stored per user by the service (``user_controls`` table), shown in the profile, and applied
to every recommendation path: muted items are removed from model, ANN and fallback
candidates alike; a boost of f divides a candidate's rank by f before the top k are taken.
``PATCH`` follows JSON merge-patch (RFC 7396): a given ``mute`` list replaces the old one,
``boost`` entries merge (``null`` removes one), ``forget`` is carried out at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from userlens.profiles.types import ControlsOut

SPACE = r" \t\n\r\f\v\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""What ``str.isspace`` (and so ``str.strip``) calls whitespace, spelled out: ``\\s`` means
less in the JSON-schema (ECMA) regex clients validate with than in Python's."""
KEY_PATTERN = rf"^[^:\x00]*[^:{SPACE}\x00][^:\x00]*:[^\x00]*[^{SPACE}\x00][^\x00]*$"
"""``field:value`` or ``item:ID``: a field and a value, each with a visible character."""
ITEM_PATTERN = rf"^[{SPACE}]*[Ii][Tt][Ee][Mm][{SPACE}]*:[^\x00]*[^{SPACE}\x00][^\x00]*$"
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=600)]
ItemKey = Annotated[str, StringConstraints(pattern=ITEM_PATTERN, max_length=600)]
MAX_BOOST = 10.0
Factor = Annotated[float, Field(gt=0, le=MAX_BOOST, allow_inf_nan=False)]
BoostMap = Annotated[dict[Key, Factor | None], WithJsonSchema({
    "type": "object", "maxProperties": 200,
    "propertyNames": {"pattern": KEY_PATTERN, "maxLength": 600},
    "additionalProperties": {"anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BOOST}, {"type": "null"}]}})]
MAX_CONTROLS = 200
"""Most mute entries and most boost entries a user may hold."""


def parse_key(text: str, *, items_only: bool = False) -> tuple[str, str]:
    """``field:value`` or ``item:ID`` -> (lowercased field, value); ValueError says why."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ValueError(f"{text!r} must look like field:value or item:ID "
                         "(for example categories:Comedy)")
    if items_only and name.lower() != "item":
        raise ValueError(f"{text!r}: only item:ID entries can be forgotten")
    return name.lower(), value


class ControlsPatch(BaseModel):
    """The body of ``PATCH /users/{id}/profile/controls``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    mute: list[Key] | None = Field(default=None, max_length=MAX_CONTROLS)
    """Replaces the muted list: ``FIELD:VALUE`` (same syntax as filters) or ``item:ID``."""
    boost: BoostMap | None = Field(default=None, max_length=MAX_CONTROLS)
    """Merged into the boosts: ``FIELD:VALUE`` or ``item:ID`` -> factor in (0, 10]; null
    removes it."""
    forget: list[ItemKey] | None = Field(default=None, max_length=10_000)
    """``item:ID``: every stored event of the user on the item is deleted, now."""

    @field_validator("mute")
    @classmethod
    def _mute(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for entry in value:
                parse_key(entry)
        return value

    @field_validator("boost")
    @classmethod
    def _boost(cls, value: dict[str, float | None] | None) -> dict[str, float | None] | None:
        for key in value or {}:
            parse_key(key)
        return value

    @field_validator("forget")
    @classmethod
    def _forget(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            parse_key(entry, items_only=True)
        return value


@dataclass(frozen=True)
class Controls:
    """Controls in force for one user (immutable; :meth:`patched` makes the next one)."""

    mute: tuple[str, ...] = ()
    boost: tuple[tuple[str, float], ...] = ()
    forgotten: int = 0

    def __bool__(self) -> bool:
        return bool(self.mute or self.boost)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Controls:
        data = data or {}
        return cls(tuple(data.get("mute", ())), tuple(sorted(data.get("boost", {}).items())),
                   int(data.get("forgotten", 0)))

    def to_json(self) -> dict[str, Any]:
        return {"mute": list(self.mute), "boost": dict(self.boost), "forgotten": self.forgotten}

    def out(self) -> ControlsOut:
        return ControlsOut(mute=list(self.mute), boost=dict(self.boost),
                           forgotten=self.forgotten)

    def patched(self, patch: ControlsPatch) -> Controls:
        mute = self.mute if patch.mute is None else tuple(dict.fromkeys(patch.mute))
        boost = dict(self.boost)
        for key, factor in (patch.boost or {}).items():
            if factor is None:
                boost.pop(key, None)
            else:
                boost[key] = float(factor)
        if len(boost) > MAX_CONTROLS:
            raise ValueError(f"at most {MAX_CONTROLS} boosts per user")
        return Controls(mute, tuple(sorted(boost.items())), self.forgotten)

    # ------------------------------------------------------------------ applying them

    def muted_items(self) -> set[str]:
        return {value for name, value in map(parse_key, self.mute) if name == "item"}

    def muted_values(self) -> list[tuple[str, str]]:
        """(field, lowercased value) pairs of the muted catalogue values."""
        return [(name, value.lower()) for name, value in map(parse_key, self.mute)
                if name != "item"]

    def boosted_values(self) -> list[tuple[tuple[str, str], float]]:
        """((field, lowercased value), factor) of the boosted catalogue values."""
        return [((name, value.lower()), factor)
                for (name, value), factor in ((parse_key(k), f) for k, f in self.boost)
                if name != "item"]

    def boosted_items(self) -> dict[str, float]:
        return {value: factor for (name, value), factor in
                ((parse_key(k), f) for k, f in self.boost) if name == "item"}

    def max_boost(self) -> float:
        return max((f for _, f in self.boost), default=1.0)
