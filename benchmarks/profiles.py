"""Profiles on real data: predictive validity, usefulness, explanation fidelity, summary
faithfulness with the embedded LLM, controls, and speed (issue "User profiles").

    python benchmarks/profiles.py                          # every section
    python benchmarks/profiles.py --sections validity usefulness
    python benchmarks/profiles.py --sasrec-epochs 20       # SASRec for cold users/fidelity

Writes benchmarks/results/profiles.json. Data come from ../shared/data (ML-1M sequences with
movies.dat genres, ML-100K with real timestamps, S3-Rec Beauty with item attributes).
Intervals are 95 % normal intervals over users.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from userlens import profiles  # noqa: E402
from userlens.config import DataConfig, SplitConfig, load_config  # noqa: E402
from userlens.data.interactions import Dataset, Histories, Interactions  # noqa: E402
from userlens.pipeline import load_data, make_split  # noqa: E402
from userlens.profiles.build import events_of  # noqa: E402
from userlens.profiles.facets import covering, interests  # noqa: E402
from userlens.profiles.population import Population  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "profiles.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interval(values) -> dict:
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)],
            "n": len(values)}


def ml1m() -> Dataset:
    return load_data(load_config(ROOT / "configs" / "ml-1m-baselines.toml").data)


def rows_of(events: Interactions) -> list[np.ndarray]:
    """Each user's event rows, chronological (ties: file order)."""
    order = events.chronological_order()
    bounds = np.flatnonzero(np.diff(events.user_idx[order])) + 1
    return np.split(order, bounds)


# ---------------------------------------------------------------------- predictive validity


def top3_hits(dataset: Dataset, train_rows: list[np.ndarray], test_rows: list[np.ndarray],
              field: str) -> dict:
    """How well three values predict each user's held-out events, against the population's
    top-3 (everything from the training part only).

    ``any``: share of held-out events with at least one of the three values (the issue's
    measure); ``mass``: share of the held-out events' value mass in the three (each event
    split evenly over its item's values, so broad multi-genre coverage earns less).
    """
    events = dataset.interactions
    train = events.take(np.concatenate(train_rows))
    population = Population.build(dataset.items, train.item_counts(), dataset.catalog.frame,
                                  fields=[field])
    f = population.fields[0]
    dense = f.dense if f.dense is not None else f.membership.toarray()
    rules = {"population top-3": lambda _history, _items: np.argsort(
                 -f.population_share, kind="stable")[:3].tolist(),
             "profile top-3 interests (by share)": lambda history, _items: [
                 f.index()[i.value] for i in interests(events_of(history, population),
                                                       population, max_per_field=3)[:3]],
             "profile top_interests (set cover, smoothed)": lambda history, _items:
                 covering(events_of(history, population), f)}
    scores: dict[str, dict[str, list[float]]] = {r: {"any": [], "mass": []} for r in rules}
    for train_part, test_part in zip(train_rows, test_rows, strict=True):
        held = dense[events.item_idx[test_part]]
        held = held[held.sum(axis=1) > 0]
        if len(train_part) == 0 or len(held) == 0:
            continue
        items = events.item_idx[train_part]
        history = dataset.items.external(items)
        for name, rule in rules.items():
            top = rule(history, items)
            inside = held[:, top].sum(axis=1) if top else np.zeros(len(held))
            scores[name]["any"].append(float((inside > 0).mean()))
            scores[name]["mass"].append(float((inside / held.sum(axis=1)).mean()))
    base = scores["population top-3"]
    out = {name: {measure: interval(values) for measure, values in found.items()}
           for name, found in scores.items()}
    for name in rules:
        if name != "population top-3":
            out[name]["difference_vs_population"] = {
                m: interval(np.array(scores[name][m]) - np.array(base[m])) for m in base}
    out["population top-3 values"] = [f.values[j] for j in
                                      np.argsort(-f.population_share, kind="stable")[:3]]
    return out


def validity() -> dict:
    out = {}
    log("validity: ML-1M genres, each user's first 80 % -> last 20 % (chronological order)")
    dataset = ml1m()
    per_user = rows_of(dataset.interactions)
    cut = [int(np.floor(0.8 * len(r))) for r in per_user]
    out["ml-1m genres, per-user chronological 80/20"] = top3_hits(
        dataset, [r[:c] for r, c in zip(per_user, cut, strict=True)],
        [r[c:] for r, c in zip(per_user, cut, strict=True)], "categories")
    log("validity: ML-100K genres, global temporal split at the 80 % time quantile")
    small = load_data(load_config(ROOT / "configs" / "ml-100k-baselines.toml").data)
    events = small.interactions
    boundary = np.quantile(events.timestamp, 0.8)
    per_user = rows_of(events)
    train_rows = [r[events.timestamp[r] < boundary] for r in per_user]
    test_rows = [r[events.timestamp[r] >= boundary] for r in per_user]
    keep = [i for i, (a, b) in enumerate(zip(train_rows, test_rows, strict=True))
            if len(a) and len(b)]
    out["ml-100k genres, global temporal 80/20"] = top3_hits(
        small, [train_rows[i] for i in keep], [test_rows[i] for i in keep], "categories")
    log("validity: S3-Rec Beauty item attributes, leave-one-out")
    beauty = beauty_dataset()
    per_user = rows_of(beauty.interactions)
    out["beauty attributes, leave-one-out"] = top3_hits(
        beauty, [r[:-1] for r in per_user], [r[-1:] for r in per_user], "attributes")
    return out


def beauty_dataset() -> Dataset:
    from userlens.data.interactions import ItemCatalog

    dataset = load_data(DataConfig(path=str(SHARED / "s3rec" / "Beauty.txt"),
                                   format="sequences"))
    attributes = json.loads((SHARED / "s3rec" / "Beauty_item2attributes.json").read_text())
    catalog = pl.DataFrame({"item_id": dataset.items.ids.tolist(),
                            "attributes": [[f"a{a}" for a in attributes.get(i, [])]
                                           for i in dataset.items.ids.tolist()]},
                           schema={"item_id": pl.String, "attributes": pl.List(pl.String)})
    dataset.catalog = ItemCatalog(catalog)
    return dataset


# ---------------------------------------------------------------------- usefulness


def fit_models(split, dataset: Dataset, sasrec_epochs: int, cache: Path) -> dict:
    from userlens.models.registry import create, load_model
    from userlens.profiles.recommender import ProfileRecommender

    population = Population.build(dataset.items, split.train.item_counts(),
                                  dataset.catalog.frame, fields=["categories"])
    models = {"most_popular": create("most_popular"),
              "profile": ProfileRecommender(population.fields[0].membership),
              "ease": create("ease", {"l2": 500.0}),
              "als": create("als", {"factors": 64, "regularization": 0.01, "alpha": 1.0,
                                    "iterations": 15})}
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(split.train, valid=split.valid, seed=0)
        log(f"fitted {name} in {time.perf_counter() - started:.1f} s")
    if sasrec_epochs:
        saved = cache / f"sasrec-ml1m-e{sasrec_epochs}"
        if (saved / "model.json").is_file():
            models["sasrec"] = load_model(saved)
            log(f"SASRec read from {saved}")
        else:
            params = load_config(ROOT / "configs" / "ml-1m-sasrec.toml").models[0].params
            model = create("sasrec", {**params, "max_epochs": sasrec_epochs})
            started = time.perf_counter()
            model.fit(split.train, valid=split.valid, seed=0)
            log(f"fitted SASRec ({sasrec_epochs} epochs at most) in "
                f"{time.perf_counter() - started:.0f} s")
            model.save(saved)
            models["sasrec"] = model
    return models


def ndcg_of(model, histories: Histories, targets: np.ndarray, batch: int = 512) -> np.ndarray:
    """Full-ranking NDCG@10 of one target per history, the history's items excluded."""
    values = []
    for start in range(0, len(histories), batch):
        part = histories.slice(start, min(start + batch, len(histories)))
        top, _ = model.recommend(part, 10, exclude=True)
        hit = top == targets[start:start + len(part), None]
        rank = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        values.append(np.where(rank >= 0, 1.0 / np.log2(np.maximum(rank, 0) + 2), 0.0))
    return np.concatenate(values)


def usefulness(split, models: dict) -> dict:
    from userlens.evaluation.runner import evaluate

    out = {"full history (evaluation runner, leave-one-out, full ranking)": {}}
    for name, model in models.items():
        result = evaluate(model, split, ["ndcg@10", "hr@10"])
        out["full history (evaluation runner, leave-one-out, full ranking)"][name] = {
            k: {"mean": round(s.mean, 4), "ci95": [round(s.ci_low, 4), round(s.ci_high, 4)]}
            for k, s in result.summary.items()}
        log(f"usefulness {name}: NDCG@10 {result.summary['ndcg@10'].mean:.4f}")
    full = out["full history (evaluation runner, leave-one-out, full ranking)"]
    out["profile_over_most_popular_ndcg@10"] = round(
        full["profile"]["ndcg@10"]["mean"] / full["most_popular"]["ndcg@10"]["mean"] - 1, 4)
    # cold users: the same test targets, each model fed only the user's first 5 events
    train, test = split.train, split.test
    first = {}
    for rows in rows_of(train):
        first[int(train.user_idx[rows[0]])] = train.item_idx[rows[:5]]
    users = [int(u) for u in test.user_idx if int(u) in first]
    target_of = dict(zip(test.user_idx.tolist(), test.item_idx.tolist(), strict=True))
    histories = Histories.from_lists([first[u].tolist() for u in users], n_items=train.n_items)
    targets = np.array([target_of[u] for u in users])
    cold = {}
    for name, model in models.items():
        cold[name] = interval(ndcg_of(model, histories, targets))
        log(f"cold (first 5 events) {name}: NDCG@10 {cold[name]['mean']:.4f}")
    out["cold users: first 5 training events only, NDCG@10"] = cold
    return out


# ---------------------------------------------------------------------- explanation fidelity


def fidelity(split, models: dict, n_users: int = 500, seed: int = 0) -> dict:
    """Deletion test: removing the top explaining event lowers the explained item's score
    more than removing a random other history event."""
    from userlens.profiles.explain import explain, method

    rng = np.random.default_rng(seed)
    train = split.train
    per_user = {int(train.user_idx[r[0]]): train.item_idx[r] for r in rows_of(train)}
    users = rng.choice(sorted(per_user), size=min(n_users, len(per_user)), replace=False)
    out = {}
    for name in ("ease", "als", "sasrec"):
        if name not in models:
            continue
        model = models[name]
        window = model.history_window()
        wins, ties, drops_top, drops_random = 0, 0, [], []
        for user in users.tolist():
            history = per_user[user][-window:] if window else per_user[user]
            base = Histories.from_lists([history.tolist()], n_items=train.n_items)
            target = int(model.recommend(base, 1)[0][0, 0])
            reasons = explain(model, history, np.array([target]), top=1)[0]
            if not reasons or len(np.unique(history)) < 2:
                continue
            top = reasons[0].item_index
            others = np.setdiff1d(np.unique(history), [top])
            random_item = int(rng.choice(others))
            batch = Histories.from_lists([history.tolist(),
                                          history[history != top].tolist(),
                                          history[history != random_item].tolist()],
                                         n_items=train.n_items)
            scores = model.score(batch)[:, target]
            drop_top, drop_random = scores[0] - scores[1], scores[0] - scores[2]
            drops_top.append(float(drop_top))
            drops_random.append(float(drop_random))
            wins += int(drop_top > drop_random)
            ties += int(drop_top == drop_random)
        n = len(drops_top)
        out[name] = {"method": method(model), "pairs": n,
                     "top_beats_random": round(wins / n, 4), "ties": ties,
                     "median_drop_top": round(statistics.median(drops_top), 5),
                     "median_drop_random": round(statistics.median(drops_random), 5)}
        log(f"fidelity {name} ({method(model)}): top event beats random in "
            f"{wins / n:.1%} of {n} pairs")
    return out


# ---------------------------------------------------------------------- faithfulness


def faithfulness(n_users: int = 200, seed: int = 0) -> dict:
    from userlens.llm import connect
    from userlens.profiles.llm_summary import summarise

    dataset = ml1m()
    population = profiles.Population.build(
        dataset.items, dataset.interactions.item_counts(), dataset.catalog.frame,
        vectors=profiles.cooccurrence_vectors(dataset.interactions),
        vector_source="co-occurrence")
    checker = profiles.FaithfulnessChecker(population)
    per_user = rows_of(dataset.interactions)
    chosen = np.random.default_rng(seed).choice(len(per_user), n_users, replace=False)
    started = time.perf_counter()
    client = connect()
    log(f"embedded LLM ready in {time.perf_counter() - started:.1f} s")
    first_ok, final_llm, template_ok, seconds, examples = 0, 0, 0, [], []
    unsupported: dict[str, int] = {}
    for n, user in enumerate(chosen.tolist()):
        rows = per_user[user]
        profile = profiles.build(dataset.items.external(dataset.interactions.item_idx[rows]),
                                 population)
        facts = profiles.ProfileFacts.of(profile.interests, profile.clusters,
                                         profile.behaviour, profile.controls, population)
        template_ok += checker.check(profile.summary.text, facts).faithful
        written = summarise(profile, population, client, checker=checker, item_noun="movie")
        seconds.append(written.seconds / written.attempts)
        first_ok += written.summary.source == "llm" and written.attempts == 1
        final_llm += written.summary.source == "llm"
        for claim in written.check.unsupported:
            kind = ("no top interest named" if claim.startswith("names none")
                    else claim.split(" ", 1)[0])
            unsupported[kind] = unsupported.get(kind, 0) + 1
        if n < 8:
            examples.append({"draft": written.draft, "shown": written.summary.text,
                             "source": written.summary.source,
                             "unsupported": written.check.unsupported})
        if (n + 1) % 50 == 0:
            log(f"faithfulness: {n + 1}/{n_users}")
    return {"users": n_users, "model": client.model,
            "first_draft_faithful_share": round(first_ok / n_users, 4),
            "llm_summary_shown_share_after_2_drafts": round(final_llm / n_users, 4),
            "template_faithful_share": round(template_ok / n_users, 4),
            "median_seconds_per_draft": round(statistics.median(seconds), 3),
            "unsupported_claims_in_rejected_final_drafts": unsupported, "examples": examples}


# ---------------------------------------------------------------------- controls and speed


def controls_and_speed(split, dataset: Dataset, models: dict, requests: int = 10_000) -> dict:
    """Mute each user's top genre, then ask for recommendations across models (EASE exact,
    ALS exact, ALS through the ANN index) and fallbacks (unknown users): count muted items.
    Then the profile of a 1,000-event user over real HTTP, and the export of every user."""
    import httpx
    from fastapi.testclient import TestClient

    from userlens import artefact
    from userlens.data.cooccurrence import cooccurrence_vectors
    from userlens.data.semantics import EventSemantics
    from userlens.serving.app import create_app
    from userlens.serving.engine import Engine
    from userlens.serving.settings import ServeSettings
    from userlens.serving.storage import Storage, StoredEvent

    out: dict = {}
    work = Path(tempfile.mkdtemp(prefix="userlens-profiles-bench-"))
    paths = {}
    vectors = cooccurrence_vectors(split.train)  # what `userlens run` saves for EASE
    for name in ("ease", "als"):
        paths[name] = artefact.write(work / "runs" / name, models[name], dataset,
                                     manifest={"label": name}, semantics=EventSemantics(),
                                     item_vectors=vectors if name == "ease" else None)
    url = f"sqlite:///{work / 'events.db'}"
    storage = Storage(url)
    rng = np.random.default_rng(0)
    per_user = rows_of(dataset.interactions)
    users = rng.choice(len(per_user), 400, replace=False)
    batch = []
    for user in users.tolist():
        items = dataset.items.external(dataset.interactions.item_idx[per_user[user]])
        batch += [StoredEvent(f"u{user}", i, 1_000_000_000_000 + 60_000 * n)
                  for n, i in enumerate(items)]
    storage.add_events(batch)
    engines = {"ease": Engine.load(paths["ease"]), "als": Engine.load(paths["als"]),
               "als+ann": Engine.load(paths["als"], ann_min_items=1000)}
    genres = sorted({g for gs in dataset.catalog.frame["categories"].to_list() for g in gs})
    counted, muted_seen, fallback_requests = 0, 0, 0
    for turn, (label, engine) in enumerate(engines.items()):
        per_engine = requests // len(engines) + (turn < requests % len(engines))
        settings = ServeSettings(artefact=paths["als" if "als" in label else "ease"], db=url,
                                 trending_cache_seconds=0)
        client = TestClient(create_app(engine, storage, settings))
        with client:
            for n in range(per_engine):
                known = n % 2 == 0
                user = f"u{users[n % len(users)]}" if known else f"new{label}{n}"
                genre = genres[n % len(genres)]
                client.patch(f"/users/{user}/profile/controls",
                             json={"mute": [f"categories:{genre}"]})
                body = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
                fallback_requests += body["fallback"]
                for item in body["items"]:
                    index = engine.items.index_of(item["item_id"])
                    muted_seen += genre in (engine.catalog[index]["categories"] or [])
                counted += 1
        log(f"controls {label}: {per_engine} requests")
    out["controls"] = {"requests": counted, "fallback_requests": fallback_requests,
                       "muted_items_returned": muted_seen,
                       "paths": list(engines)}
    log(f"controls: {muted_seen} muted items in {counted} requests")

    # speed: a 1,000-event user's profile over HTTP (uvicorn in a subprocess)
    longest = max(range(len(per_user)), key=lambda u: len(per_user[u]))
    items = dataset.items.external(dataset.interactions.item_idx[per_user[longest]])[-1000:]
    # ML-1M's sequence file has order, not times: spread the events over 120 evenings
    stamps = [1_000_000_000_000 + 86_400_000 * (n // 9) + 3_600_000 * 20 + 600_000 * (n % 9)
              for n in range(len(items))]
    storage.add_events([StoredEvent("heavy", i, t) for i, t in zip(items, stamps,
                                                                    strict=True)])
    storage.close()
    import subprocess

    env = {**os.environ, "USERLENS_HOME": str(work), "USERLENS_TRENDING_CACHE_SECONDS": "0"}
    port = 8765
    server = subprocess.Popen([sys.executable, "-m", "userlens.cli.main", "serve",
                               str(paths["ease"]), "--db", url, "--port", str(port)],
                              env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            timings = []
            for n in range(330):
                started = time.perf_counter()
                response = http.get("/users/heavy/profile")
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if n >= 30:  # warm-up
                    timings.append(elapsed * 1000)
        profile = response.json()
        out["profile_http_1000_events_ms"] = {
            "p50": round(float(np.percentile(timings, 50)), 2),
            "p99": round(float(np.percentile(timings, 99)), 2), "requests": len(timings),
            "events": int(profile["behaviour"]["events"]["value"]),
            "clusters": len(profile["clusters"])}
        log(f"profile over HTTP: {out['profile_http_1000_events_ms']}")
    finally:
        server.terminate()
        server.wait(10)
    from userlens.profiles.export import export

    workers = os.cpu_count() or 1  # as `userlens profiles export` by default
    n, seconds = export(dataset, work / "profiles.parquet", workers=workers)
    out["export_all_users"] = {"users": n, "seconds": round(seconds, 2), "workers": workers}
    log(f"export: {n} profiles in {seconds:.1f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="*", default=[
        "validity", "usefulness", "fidelity", "faithfulness", "controls"])
    parser.add_argument("--sasrec-epochs", type=int, default=20,
                        help="train SASRec for at most this many epochs (0: skip SASRec)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if "validity" in args.sections:
        results["validity"] = validity()
    needs_models = {"usefulness", "fidelity", "controls"} & set(args.sections)
    if needs_models:
        dataset = ml1m()
        split = make_split(dataset, SplitConfig(method="leave_one_out"), 0)
        models = fit_models(split, dataset, args.sasrec_epochs if
                            {"usefulness", "fidelity"} & set(args.sections) else 0, args.cache)
        if "usefulness" in args.sections:
            results["usefulness"] = usefulness(split, models)
        if "fidelity" in args.sections:
            results["fidelity"] = fidelity(split, models)
        if "controls" in args.sections:
            results["controls_and_speed"] = controls_and_speed(split, dataset, models)
    if "faithfulness" in args.sections:
        results["faithfulness"] = faithfulness()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
