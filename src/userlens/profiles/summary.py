"""The profile's short text: a deterministic template, and the checker every LLM summary
passes before anyone sees it.

The template only prints facts of the profile, so it is faithful by construction (a test
runs the checker over it anyway). An LLM summary is faithful when every catalogue value,
item title and number it names is in the profile; anything else is an unsupported claim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from userlens.profiles.population import Population
from userlens.profiles.types import Behaviour, Cluster, ControlsOut, Interest, Stated

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NUMBER = re.compile(r"(?<![\w.:])(\d+(?:[.,]\d+)*)(\s*%)?")


def template(interests: list[Interest], clusters: list[Cluster], behaviour: Behaviour,
             controls: ControlsOut, stated: list[Stated] | None = None) -> str:
    """Two to four sentences from the profile's strongest facts."""
    parts = []
    top = interests[:3]
    if top:
        listed = ", ".join(f"{i.value} ({i.share:.0%})" for i in top)
        parts.append(f"Mostly {listed}.")
        distinctive = [i for i in interests if i.share >= 0.05 and 1.5 <= i.lift < 1e9]
        if distinctive:
            d = max(distinctive, key=lambda i: i.lift)
            parts.append(f"{d.value} stands out at {d.lift:.1f} times the usual share.")
    elif behaviour.events.value:
        parts.append(f"{int(behaviour.events.value)} events on items without catalogue values.")
    b = behaviour
    if b.active_days.value is not None and b.events.value:
        when = (f", most often around {int(b.peak_hour.value)}:00 UTC on "
                f"{WEEKDAYS[int(b.peak_weekday.value)]}s")
        parts.append(f"{int(b.events.value)} events on {int(b.active_days.value)} days"
                     f"{when}.")
    elif b.events.value:
        parts.append(f"{int(b.events.value)} events.")
    if b.popularity_percentile.value is not None:
        pct = b.popularity_percentile.value
        kind = ("mostly popular items" if pct >= 75 else "less-known items" if pct < 50
                else "a mix of popular and less-known items")
        parts.append(f"Prefers {kind} (popularity percentile {pct:.0f}).")
    if b.drift.value is not None and b.drift.value >= 0.2 and interests:
        rising = max(interests, key=lambda i: i.recent_share - i.share)
        if rising.recent_share > rising.share:
            parts.append(f"Lately more {rising.value} ({rising.recent_share:.0%} of recent "
                         "events).")
    if controls.mute:
        parts.append(f"Muted: {', '.join(controls.mute)}.")
    liked = [s.attribute for s in stated or [] if s.answer == "yes"][:5]
    if liked:
        parts.append(f"Said yes in conversations to: {', '.join(liked)}.")
    return " ".join(parts) if parts else "No events yet."


@dataclass
class Check:
    """The checker's verdict on one text."""

    unsupported: list[str]
    """Names and numbers the text states that the profile does not contain."""

    @property
    def faithful(self) -> bool:
        return not self.unsupported


def _short_title(title: str) -> str:
    """'Matrix, The (1999)' -> 'The Matrix': how a person (or a model) names it."""
    title = re.sub(r"\s*\([^)]*\)\s*$", "", title).strip()
    match = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|Das|Der|Die|El)$", title)
    return f"{match.group(2)} {match.group(1)}" if match else title


class FaithfulnessChecker:
    """Finds the catalogue values, item titles and numbers a text names, and which of them
    the profile does not support.

    Field values match case-insensitively on word boundaries; titles match as written
    (so the word "big" in a sentence is not the film *Big*) and only titles of two words or
    at least 8 characters are looked for. Numbers match a profile number within rounding
    (0.5), percentages against shares in percent.
    """

    def __init__(self, population: Population) -> None:
        self.population = population

    @cached_property
    def _values(self) -> re.Pattern | None:
        terms = {v for f in self.population.fields for v in f.values if len(v) >= 2}
        return _alternation(terms, re.IGNORECASE)

    @cached_property
    def _titles(self) -> re.Pattern | None:
        if self.population.titles is None:
            return None
        terms = {_short_title(t) for t in self.population.titles}
        return _alternation({t for t in terms if len(t) >= 8 or " " in t}, 0,
                            suffix=r"(?:\s*\([^)]*\))?")

    def check(self, text: str, profile_facts: ProfileFacts) -> Check:
        unsupported = []
        scrubbed = text
        if self._titles is not None:
            for found in set(self._titles.findall(text)):
                if _short_title(found) not in profile_facts.titles:
                    unsupported.append(f"item {found!r}")
                scrubbed = scrubbed.replace(found, " ")
        if self._values is not None:
            for found in {m.lower() for m in self._values.findall(scrubbed)}:
                if found not in profile_facts.values:
                    unsupported.append(f"value {found!r}")
        for number, percent in NUMBER.findall(scrubbed):
            x = float(number.replace(",", "")) if number.count(",") != 1 or "." in number \
                else float(number.replace(",", "."))
            pool = profile_facts.percents if percent else profile_facts.numbers
            if not any(abs(x - y) <= 0.5 for y in pool):
                unsupported.append(f"number {number}{'%' if percent else ''}")
        return Check(sorted(unsupported))


def _alternation(terms: set[str], flags: int, suffix: str = "") -> re.Pattern | None:
    """One regex finding any of the terms as whole words (longest first), with an optional
    suffix pattern (a title's year in parentheses)."""
    if not terms:
        return None
    ordered = sorted(terms, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:(?:" + "|".join(map(re.escape, ordered)) + r")(?!\w)"
                      + suffix + ")", flags)


@dataclass
class ProfileFacts:
    """What a summary may name: the profile's values, titles and numbers."""

    values: set[str]
    titles: set[str]
    numbers: list[float]
    percents: list[float]

    @classmethod
    def of(cls, interests: list[Interest], clusters: list[Cluster], behaviour: Behaviour,
           controls: ControlsOut, population: Population) -> ProfileFacts:
        values, titles, numbers, percents = set(), set(), [], []
        evidence = set()
        for i in interests:
            values.update({i.value.lower(), i.field.lower()})
            numbers += [i.lift, i.count, i.events_since]
            percents += [100 * i.share, 100 * i.population_share, 100 * i.recent_share]
            evidence.update(i.evidence)
        for c in clusters:
            values.update(label.split(":", 1)[1].lower() for label in c.label)
            titles.update(_short_title(t) for t in c.titles)
            numbers += [c.size]
            percents += [100 * c.weight]
            evidence.update(c.evidence)
        for item_id in evidence:
            index = population.items.index_of(item_id)
            if index is not None:
                titles.add(_short_title(population.title(index)))
        for name in type(behaviour).model_fields:
            fact = getattr(behaviour, name)
            if name in ("hour_of_day", "day_of_week"):
                percents += [100 * v for v in fact or []]
            elif fact.value is not None:
                numbers.append(fact.value)
                if name == "peak_weekday":
                    values.add(WEEKDAYS[int(fact.value)].lower())
                if name in ("diversity", "mainstreamness", "drift", "repeat_ratio"):
                    percents.append(100 * fact.value)
        for muted in controls.mute:
            values.add(muted.split(":", 1)[1].lower())
        # numbers inside names ("Apollo 13") are part of the name, not a claim
        for title in titles:
            numbers += [float(n) for n, _ in NUMBER.findall(title) if "," not in n]
        return cls(values, titles, numbers + percents, percents)
