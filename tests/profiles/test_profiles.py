"""Profiles with known answers: shares, lifts, entropy, drift, routine, clusters, summaries."""

import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from userlens import profiles
from userlens.data.interactions import IdIndex
from userlens.profiles import Controls, ControlsPatch, FaithfulnessChecker, Population, ProfileFacts

ITEMS = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "c1"]
GENRES = [["Action"]] * 4 + [["Biography"]] * 4 + [["Crime"]]
TITLES = ["Alpha One", "Alpha Two", "Alpha Three", "Alpha Four", "Bravo One", "Bravo Two",
          "Bravo Three", "Bravo Four", "Charlie Lonely"]


def population(vectors=None, popularity=None):
    catalog = pl.DataFrame({"item_id": ITEMS, "title": TITLES, "categories": GENRES})
    # population: 10 events on each A item, 5 on each B item, 20 on c1 -> 40 / 20 / 20
    popularity = popularity if popularity is not None else [10] * 4 + [5] * 4 + [20]
    return Population.build(IdIndex(ITEMS), np.array(popularity, float), catalog,
                            vectors=vectors, vector_source="model" if vectors is not None else None)


def facts(profile, pop):
    return ProfileFacts.of(profile.interests, profile.clusters, profile.behaviour,
                           profile.controls, pop)


def test_shares_lifts_evidence_and_recency():
    pop = population()
    history = ["a1", "a2", "a3", "a4", "a1", "a2", "b1", "b2"]  # 6 A, 2 B
    profile = profiles.build(history, pop)
    first, second = profile.interests[:2]
    assert (first.field, first.value, first.count) == ("categories", "Action", 6)
    assert first.share == pytest.approx(0.75)
    assert first.population_share == pytest.approx(0.5)
    assert first.lift == pytest.approx(1.5)
    assert (second.value, second.share, second.lift) == ("Biography", 0.25, pytest.approx(1.0))
    assert second.events_since == 0 and first.events_since == 2
    assert first.evidence == ["a2", "a1", "a4", "a3"]  # newest first, each item once
    # Crime: no event, no interest
    assert [i.value for i in profile.interests] == ["Action", "Biography"]


def test_diversity_mainstreamness_repeats():
    pop = population()
    profile = profiles.build(["a1", "a2", "a3", "b1", "a1", "a2"], pop)
    b = profile.behaviour
    # mix A 5/6... but a1, a2 repeat: events are 5 A, 1 B
    p = np.array([5 / 6, 1 / 6])
    entropy = -(p * np.log(p)).sum()
    assert b.diversity.value == pytest.approx(entropy / math.log(3), abs=1e-4)
    assert b.repeat_ratio.value == pytest.approx(2 / 6, abs=1e-4)
    # population mix: A 0.5, B 0.25, C 0.25
    q = np.array([0.5, 0.25, 0.25])
    u = np.array([5 / 6, 1 / 6, 0])
    m = (u + q) / 2
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)  # noqa: E731
    assert b.mainstreamness.value == pytest.approx(1 - (kl(u) + kl(q)) / 2, abs=1e-4)
    # popularity percentiles: c1 100, Action items 68.75 (ranks 4-7), Biography 18.75 (0-3)
    assert b.popularity_percentile.value == pytest.approx((5 * 68.75 + 18.75) / 6, abs=0.1)


def test_drift_is_one_for_a_complete_change_and_zero_for_none():
    pop = population()
    changed = profiles.build(["a1", "a2", "a3", "a4"] * 3 + ["b1", "b2", "b3", "b4"] * 3, pop)
    # 24 events: the recent window is the newest 10 (all B), the earlier 14 are 12 A + 2 B
    early = np.array([12, 2]) / 14
    m = np.array([early[0] / 2, (early[1] + 1) / 2])
    expected = (early[0] * math.log2(early[0] / m[0]) + early[1] * math.log2(early[1] / m[1])
                + math.log2(1 / m[1])) / 2
    assert changed.behaviour.drift.value == pytest.approx(expected, abs=1e-4)
    stable = profiles.build(["a1", "a2", "a3", "a4"] * 6, pop)
    assert stable.behaviour.drift.value == pytest.approx(0.0)
    short = profiles.build(["a1", "b1"], pop)
    assert short.behaviour.drift.value is None


def test_routine_and_sessions_from_real_timestamps():
    pop = population()
    monday = datetime(2024, 1, 1, 21, 0, tzinfo=UTC).timestamp()  # a Monday, 21:00 UTC
    week = 7 * 86_400
    times = [monday, monday + 600, monday + 1200,  # one session of three
             monday + week, monday + week + 300,  # the next Monday, one session
             monday + 86_400 + 3 * 3600]  # Wednesday, 00:00 UTC
    frame = pl.DataFrame({"item_id": ["a1", "a2", "a3", "b1", "b2", "c1"], "timestamp": times})
    b = profiles.build(frame, pop).behaviour
    assert b.peak_hour.value == 21 and b.peak_weekday.value == 0
    assert b.sessions.value == 3 and b.active_days.value == 3
    assert b.span_days.value == pytest.approx(7 + 300 / 86_400, abs=0.01)
    assert b.hour_of_day[21] == pytest.approx(5 / 6, abs=1e-3)
    assert b.day_of_week[2] == pytest.approx(1 / 6, abs=1e-3)
    untimed = profiles.build(["a1", "a2"], pop).behaviour
    assert untimed.peak_hour.value is None and untimed.hour_of_day is None


def test_clusters_recover_planted_interests():
    rng = np.random.default_rng(0)
    # A items around one direction, B items around an orthogonal one, c1 elsewhere
    centres = np.eye(3) * 5
    vectors = np.vstack([centres[0] + rng.normal(0, 0.3, (4, 3)),
                         centres[1] + rng.normal(0, 0.3, (4, 3)),
                         centres[2] + rng.normal(0, 0.3, (1, 3))])
    pop = population(vectors=vectors)
    profile = profiles.build(["a1", "b1", "a2", "b2", "a3", "b3", "a4", "a1"], pop)
    assert profile.cluster_source == "model"
    groups = profile.clusters
    assert len(groups) == 2
    assert groups[0].label == ["categories:Action"]
    assert set(groups[0].evidence) == {"a1", "a2", "a3", "a4"}
    assert groups[1].label == ["categories:Biography"] and groups[1].size == 3
    assert groups[0].weight == pytest.approx(5 / 8)
    one = profiles.build(["a1", "a2", "a3", "a4"], pop)
    assert len(one.clusters) == 1
    assert profiles.build(["a1", "b1"], population()).clusters == []  # no vectors


def test_template_is_faithful_and_checker_catches_planted_claims():
    pop = population()
    checker = FaithfulnessChecker(pop)
    for history in (["a1", "a2", "b1"], ["c1", "c1", "b2", "a3"] * 6, ["b1"] * 3):
        profile = profiles.build(history, pop)
        assert checker.check(profile.summary.text, facts(profile, pop)).faithful, \
            profile.summary.text
    profile = profiles.build(["a1", "a2", "a3", "b1"], pop)
    f = facts(profile, pop)
    assert checker.check("You like Action (75%) and Alpha One.", f).faithful
    assert checker.check("You love Crime.", f).unsupported == ["value 'crime'"]
    assert checker.check("Your favourite is Charlie Lonely.", f).unsupported == \
        ["item 'Charlie Lonely'"]
    assert checker.check("73% of what you watch is Action.", f).unsupported == ["number 73%"]


def test_controls_flag_interests_and_patch_as_merge_patch():
    pop = population()
    controls = Controls().patched(ControlsPatch(mute=["categories:Biography", "item:a1"],
                                                boost={"categories:Action": 2.0}))
    profile = profiles.build(["a1", "a2", "b1"], pop, controls=controls)
    flags = {i.value: (i.muted, i.boost) for i in profile.interests}
    assert flags == {"Action": (False, 2.0), "Biography": (True, None)}
    assert profile.controls.mute == ["categories:Biography", "item:a1"]
    assert "Muted" in profile.summary.text
    later = controls.patched(ControlsPatch(boost={"categories:Action": None,
                                                  "categories:Crime": 3}))
    assert later.mute == controls.mute and dict(later.boost) == {"categories:Crime": 3.0}
    assert profile.version != profiles.build(["a1", "a2", "b1"], pop).version
    for bad in ({"mute": ["nocolon"]}, {"boost": {"categories:Action": 0}},
                {"boost": {"item:a1": 11}}, {"forget": ["categories:Action"]}, {"unknown": 1}):
        with pytest.raises(ValueError):
            ControlsPatch.model_validate(bad)


def test_notebook_use_on_a_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    events = pd.DataFrame({"user_id": ["u1"] * 4 + ["u2"] * 3,
                           "item_id": ["a1", "a2", "b1", "a3", "b1", "b2", "c1"]})
    catalog = pd.DataFrame({"item_id": ITEMS, "categories": [g[0] for g in GENRES]})
    pop = Population.from_events(events, catalog, vector_dim=2)
    profile = profiles.build(events[events.user_id == "u1"], pop, user_id="u1")
    assert profile.interests[0].value == "Action" and profile.interests[0].share == 0.75
    assert profile.cluster_source == "co-occurrence"
    assert profile.model_dump(mode="json")["summary"]["source"] == "template"


def test_top_interests_cover_the_events_not_the_same_ones_twice():
    from userlens.profiles.facets import covering

    catalog = pl.DataFrame({"item_id": ["x1", "x2", "x3", "y1", "z1"],
                            "genre": [["Action", "Thriller"]] * 3 + [["Drama"], ["Comedy"]]})
    pop = Population.build(IdIndex(catalog["item_id"].to_list()), np.array([1.0, 1, 1, 1, 30]),
                           catalog)
    events = profiles.events_of(["x1", "x2", "x3", "y1", "y1"], pop)
    f = pop.fields[0]
    # by share: Action 3, Thriller 3, Drama 2; as a cover Thriller adds nothing after Action
    assert [f.values[j] for j in covering(events, f, k=2, smoothing=0)] == ["Action", "Drama"]
    # only the user's own values, while they last; then the population's (Comedy: 30 of 34)
    one = profiles.events_of(["y1"], pop)
    assert [f.values[j] for j in covering(one, f, k=2, smoothing=20)] == ["Drama", "Comedy"]
    assert profiles.build(["x1", "x2", "x3", "y1", "y1"], pop).top_interests[:2] == \
        ["genre:Action", "genre:Drama"]


def test_control_patterns_spell_out_exactly_what_python_calls_whitespace():
    # the OpenAPI pattern is read by ECMA regex engines too, where \s means something else
    import re
    import sys

    from userlens.profiles.controls import SPACE, ControlsPatch

    space = re.compile(f"[{SPACE}]")
    assert all(chr(c).isspace() == bool(space.fullmatch(chr(c)))
               for c in range(sys.maxunicode + 1))
    with pytest.raises(ValueError):
        ControlsPatch(mute=["\x85:x"])
