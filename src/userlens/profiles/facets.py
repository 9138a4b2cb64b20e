"""Interests and behaviour from one user's events (known answers in tests/profiles)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from userlens.profiles.population import FieldValues, Population
from userlens.profiles.types import Behaviour, Interest, Measure

DAY = 86_400.0
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Events:
    """One user's events, oldest first, as the profile reads them.

    ``index`` is the item's index in the population (-1: unknown item), ``time`` seconds
    since the epoch when ``has_time`` else positions, ``weight`` each event's weight.
    """

    item_ids: list[str]
    index: np.ndarray
    time: np.ndarray
    weight: np.ndarray
    has_time: bool

    def __len__(self) -> int:
        return len(self.item_ids)

    def recent(self) -> np.ndarray:
        """Boolean mask of the recent events: the newest fifth, at least 10."""
        n = len(self)
        size = min(n, max(10, n // 5))
        mask = np.zeros(n, bool)
        mask[n - size:] = True
        return mask


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 identical, 1 disjoint) of two distributions."""
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


def mix(events: Events, f: FieldValues, mask: np.ndarray | None = None) -> np.ndarray:
    """(n_values,) the events' distribution over the field's values (each event split evenly
    over its item's values, weighted), not normalised."""
    known = events.index >= 0
    if mask is not None:
        known &= mask
    rows = f.rows(events.index[known])
    per = np.maximum(rows.sum(axis=1), 1)
    return rows.T @ (events.weight[known] / per)


def interests(events: Events, population: Population, *, max_per_field: int = 10,
              max_evidence: int = 10) -> list[Interest]:
    """Every field value the user has events on (up to ``max_per_field`` per field),
    strongest first (share, then lift)."""
    total = float(events.weight.sum())
    if total <= 0:
        return []
    recent = events.recent()
    recent_total = float(events.weight[recent].sum())
    found: list[Interest] = []
    known = np.flatnonzero(events.index >= 0)
    for f in population.fields:
        if len(known) == 0:
            break
        rows = f.rows(events.index[known])  # (known events, values)
        counts = rows.T @ events.weight[known]
        for j in np.argsort(-counts, kind="stable")[:max_per_field]:
            if counts[j] <= 0:
                break
            positions = known[np.flatnonzero(rows[:, j])]
            found.append(_interest(events, f, int(j), positions, float(counts[j]), total,
                                   recent, recent_total, max_evidence))
    found.sort(key=lambda i: (-i.share, -i.lift, i.field, i.value))
    return found


def _interest(events: Events, f: FieldValues, j: int, positions: np.ndarray, count: float,
              total: float, recent: np.ndarray, recent_total: float,
              max_evidence: int) -> Interest:
    share = count / total
    population_share = float(f.population_share[j])
    lift = share / population_share if population_share > 0 else float("inf")
    newest = int(positions.max())
    recent_count = float(events.weight[positions[recent[positions]]].sum())
    evidence = [events.item_ids[p] for p in sorted(positions.tolist(), reverse=True)]
    value = f.values[j]
    lift_text = (f"{lift:.1f}x the population's {population_share:.0%}"
                 if np.isfinite(lift) else "a value no training event had")
    return Interest(
        field=f.name, value=value, share=round(share, 4),
        population_share=round(population_share, 4),
        lift=round(lift, 3) if np.isfinite(lift) else 1e9, count=int(round(count)),
        last_seen=float(events.time[newest]), events_since=len(events) - 1 - newest,
        recent_share=round(recent_count / recent_total, 4) if recent_total > 0 else 0.0,
        evidence=list(dict.fromkeys(evidence))[:max_evidence],
        explanation=f"{int(round(count))} of {int(round(total))} events ({share:.0%}) are "
                    f"{f.name} {value}, {lift_text}")


COVERAGE_SMOOTHING = 20.0
"""Pseudo-events spread as the population's shares in :func:`covering`; chosen on ML-1M's
validation segment (each user's 60-80 % of events predicted from the first 60 %), never on
the test segment the benchmark reports (docs/profiles.md)."""


def covering(events: Events, f: FieldValues, k: int = 3,
             smoothing: float = COVERAGE_SMOOTHING) -> list[int]:
    """The k values of a field that together cover most of the user's events: greedy set
    cover among the values the user has events on, each value's gain being the events it
    adds plus ``smoothing`` times its population share (which decides between values that
    add little); the population's values fill in when the user has fewer than k."""
    known = events.index >= 0
    rows = f.rows(events.index[known]) > 0
    weight = events.weight[known]
    own = rows.any(axis=0)
    left = np.ones(len(rows), bool)
    chosen: list[int] = []
    for _ in range(min(k, len(f.values))):
        gain = rows[left].T.astype(np.float64) @ weight[left] + smoothing * f.population_share
        if own[[j for j in range(len(own)) if j not in chosen]].any():
            gain[~own] = -np.inf
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        left &= ~rows[:, best]
    return chosen


def behaviour(events: Events, population: Population, *,
              session_gap_minutes: float = 30.0) -> Behaviour:
    """Activity, routine, novelty, diversity, repeats, mainstreamness and drift."""
    n = len(events)
    distinct = len(set(events.item_ids))
    timed = events.has_time and n > 0
    times = events.time
    m = Measure
    if timed:
        days = np.floor(times / DAY).astype(np.int64)
        active_days = len(np.unique(days))
        span = float((times.max() - times.min()) / DAY)
        gaps = np.diff(np.sort(times))
        sessions = int(1 + np.sum(gaps > session_gap_minutes * 60))
        hours = np.bincount(((times % DAY) // 3600).astype(np.int64), minlength=24)[:24]
        # 1970-01-01 was a Thursday (weekday 3)
        weekdays = np.bincount(((days + 3) % 7).astype(np.int64), minlength=7)
        hour_share = (hours / n).round(4).tolist()
        day_share = (weekdays / n).round(4).tolist()
        peak_hour, peak_day = int(np.argmax(hours)), int(np.argmax(weekdays))
        activity = [
            m(value=float(active_days), explanation=f"active on {active_days} days"),
            m(value=round(span, 2), explanation=f"first to last event: {span:.0f} days"),
            m(value=float(sessions), explanation=f"{sessions} sessions (gaps over "
                                                 f"{session_gap_minutes:g} minutes split them)"),
            m(value=float(peak_hour), explanation=f"most events at {peak_hour}:00 UTC "
                                                  f"({hours[peak_hour] / n:.0%})"),
            m(value=float(peak_day), explanation=f"most events on {WEEKDAYS[peak_day]}s "
                                                 f"({weekdays[peak_day] / n:.0%})"),
        ]
    else:
        hour_share = day_share = None
        why = "the events have no real timestamps"
        activity = [m(value=None, explanation=why) for _ in range(5)]
    known = events.index >= 0
    if known.any():
        pct = float(np.average(population.percentile[events.index[known]],
                               weights=events.weight[known]))
        popularity = m(value=round(pct, 1), explanation=(
            f"items at the {pct:.0f}th popularity percentile on average"
            + (" (mostly popular items)" if pct >= 75 else
               " (seeks less-known items)" if pct < 50 else "")))
    else:
        popularity = m(value=None, explanation="no item the population knows")
    repeats = (n - distinct) / n if n else 0.0
    main = population.fields[0] if population.fields else None
    diversity, mainstream, drift = _distribution_measures(events, population, main)
    return Behaviour(
        events=m(value=float(n), explanation=f"{n} events"),
        distinct_items=m(value=float(distinct), explanation=f"{distinct} distinct items"),
        active_days=activity[0], span_days=activity[1], sessions=activity[2],
        peak_hour=activity[3], peak_weekday=activity[4],
        hour_of_day=hour_share, day_of_week=day_share, popularity_percentile=popularity,
        diversity=diversity,
        repeat_ratio=m(value=round(repeats, 4),
                       explanation=f"{repeats:.0%} of events repeat an earlier item"),
        mainstreamness=mainstream, drift=drift)


def _distribution_measures(events: Events, population: Population,
                           main: FieldValues | None) -> tuple[Measure, Measure, Measure]:
    if main is None:
        none = Measure(value=None, explanation="the catalogue has no category field")
        return none, none, none
    user = mix(events, main)
    if user.sum() <= 0:
        none = Measure(value=None, explanation=f"no event on an item with a {main.name}")
        return none, none, none
    p = user / user.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    diversity = entropy / np.log(len(main.values)) if len(main.values) > 1 else 0.0
    mainstream = 1.0 - jensen_shannon(p, main.population_mix)
    recent = events.recent()
    if len(events) >= 20 and (~recent).any():
        drift = jensen_shannon(mix(events, main, recent), mix(events, main, ~recent))
        drift_m = Measure(value=round(drift, 4), explanation=(
            f"recent {main.name} mix differs from the earlier one by {drift:.2f} "
            "(Jensen-Shannon, 0 = same, 1 = disjoint)"))
    else:
        drift_m = Measure(value=None, explanation="fewer than 20 events: no drift measured")
    return (Measure(value=round(diversity, 4),
                    explanation=f"{main.name} diversity {diversity:.2f} "
                                "(0 = one value, 1 = evenly spread)"),
            Measure(value=round(mainstream, 4),
                    explanation=f"mainstreamness {mainstream:.2f} (1 = the population's "
                                f"{main.name} mix)"),
            drift_m)
