"""``userlens audit manipulation``: fake users injected into the training data to push
unpopular target items, how far each model follows, and whether they can be detected.

Attacks (each fake user holds every target and ``filler`` other items; shilling attacks
from the literature, adapted to implicit feedback where there are no ratings to fake):

- ``random``: fillers drawn uniformly from the catalogue.
- ``average``: fillers drawn in proportion to popularity (what an average user looks like).
- ``bandwagon``: a quarter of the fillers from the 50 most popular items, the rest random.
- ``segment``: fillers from the targets' segment (items sharing their main genre).
- ``sequential``: popular items each followed by a target, so a sequence model learns
  "after X comes the target" (the sequential attack LoRec defends against).
- ``camouflage``: a copy of a real user's history (order kept, at most ``filler`` items)
  with the targets inserted at random places: the fake accounts look like real people and
  share nothing with each other but the targets.

Success is the targets' hit rate at 10 and 50 over real users (the share of (user, target)
pairs where the target is in the user's top-k, users who already have it left out), before
and after, on the same split; NDCG@10 on the real users' test items is the utility.

Detection: a gradient-boosting detector on features of each account's history (length,
popularity profile, genre entropy, similarity to the most similar other accounts), trained
on a *different* simulated campaign (other targets, other seed) of every *other* attack
kind, so each attack is unknown to the detector that judges it (LoRec's setting): precision,
recall (threshold 0.5) and AUC.

Defence ``reweight`` (LoRec, Zhang et al. SIGIR 2024, user-wise reweighting): the model is
retrained on the attacked data with each training user's weight 1 - p(fake), p from that
detector, through ``Recommender.set_user_weights`` (the loss of each of the user's positions
in SASRec, the Gram matrix XᵀWX in EASE, the confidences in ALS). LoRec's calibrator also
reads LLM embeddings of the items; ours reads the history features above.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.preprocessing import normalize

from userlens.audits.fairness import item_groups, lists_of
from userlens.audits.privacy import UTILITY, Notify, joined, trained
from userlens.audits.rerank import ItemGroups
from userlens.config import ExperimentConfig
from userlens.data.interactions import Dataset, Histories, Interactions
from userlens.data.splits import Split
from userlens.evaluation.runner import evaluate
from userlens.models.base import Capability, Recommender
from userlens.models.registry import create

AttackKind = Literal["random", "average", "bandwagon", "segment", "sequential", "camouflage"]
ATTACKS: tuple[AttackKind, ...] = ("random", "average", "bandwagon", "segment", "sequential",
                                   "camouflage")
POPULAR = 50


def pick_targets(train: Interactions, n: int, seed: int) -> np.ndarray:
    """``n`` unpopular items the model still knows: below the median popularity, with at
    least 5 training events."""
    counts = train.item_counts()
    eligible = np.flatnonzero((counts >= 5) & (counts <= np.median(counts[counts > 0])))
    if len(eligible) < n:
        raise ValueError(f"only {len(eligible)} unpopular items with 5+ events; need {n}")
    return np.sort(np.random.default_rng(seed).choice(eligible, size=n, replace=False))


def fake_sequences(kind: AttackKind, n_fake: int, filler: int, targets: np.ndarray,
                   popularity: np.ndarray, groups: ItemGroups, seed: int,
                   real: Histories | None = None) -> list[np.ndarray]:
    """One item sequence per fake user, oldest first (``camouflage`` copies ``real``)."""
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack '{kind}'; known: {', '.join(ATTACKS)}")
    rng = np.random.default_rng(seed)
    if kind == "camouflage":
        if real is None or not len(real):
            raise ValueError("the camouflage attack copies real histories; none were given")
        return [_camouflaged(real.sequence(int(rng.integers(len(real)))), filler, targets, rng)
                for _ in range(n_fake)]
    n_items = len(popularity)
    others = np.setdiff1d(np.arange(n_items), targets)
    weights = popularity[others].astype(np.float64) + 1.0
    top = others[np.argsort(-popularity[others], kind="stable")[:POPULAR]]
    if kind == "segment" and groups.genres.shape[1]:
        main = groups.genres[targets].sum(axis=0).argmax()
        segment = others[groups.genres[others, main] > 0]
    else:
        segment = others
    out = []
    for _ in range(n_fake):
        size = min(filler, len(others))
        if kind == "random":
            fill = rng.choice(others, size=size, replace=False)
        elif kind == "average":
            fill = rng.choice(others, size=size, replace=False, p=weights / weights.sum())
        elif kind == "bandwagon":
            head = rng.choice(top, size=min(size // 4, len(top)), replace=False)
            rest = rng.choice(np.setdiff1d(others, head), size=size - len(head), replace=False)
            fill = np.r_[head, rest]
        elif kind == "segment":
            w = popularity[segment].astype(np.float64) + 1.0
            fill = rng.choice(segment, size=min(size, len(segment)), replace=False,
                              p=w / w.sum())
        else:  # sequential: popular item -> target, repeated
            pairs = max(1, size // 2)
            lead = rng.choice(top, size=pairs, replace=pairs > len(top))
            follow = targets[np.arange(pairs) % len(targets)]
            out.append(np.column_stack([lead, follow]).ravel())
            continue
        sequence = np.r_[fill, targets]
        rng.shuffle(sequence)
        out.append(sequence)
    return out


def _camouflaged(history: np.ndarray, filler: int, targets: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """A real history (at most ``filler`` of its items, order kept, targets removed) with
    each target inserted at a random place."""
    history = history[~np.isin(history, targets)]
    if len(history) > filler:
        history = history[np.sort(rng.choice(len(history), size=filler, replace=False))]
    places = np.sort(rng.integers(0, len(history) + 1, size=len(targets)))
    return np.insert(history, places, rng.permutation(targets))


def inject(split: Split, sequences: list[np.ndarray]) -> tuple[Split, np.ndarray]:
    """The split with one new user per sequence, all their events in training.

    Returns:
        (the split, the fake users' indices). Real users keep their indices; every part
        gets the larger user vocabulary.
    """
    train = split.train
    n_real = train.n_users
    n_fake = len(sequences)
    users = np.repeat(np.arange(n_real, n_real + n_fake), [len(s) for s in sequences])
    items = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    positions = np.concatenate([np.arange(len(s)) for s in sequences]) if sequences else items
    start = int(train.timestamp.min()) if train.has_time and len(train) else 0
    step = 60 if train.has_time else 1
    times = start + positions * step
    first_id = max(int(p.row_id.max()) for p in (split.train, split.valid, split.test)
                   if len(p)) + 1

    def grown(part: Interactions, extra: bool) -> Interactions:
        if not extra:
            return Interactions(part.user_idx, part.item_idx, part.timestamp, part.value,
                                part.event_type, n_real + n_fake, part.n_items,
                                part.event_types, part.has_time, part.row_id)
        n = len(items)
        return Interactions(
            np.r_[part.user_idx, users].astype(np.int32),
            np.r_[part.item_idx, items].astype(np.int32),
            np.r_[part.timestamp, times].astype(np.int64),
            np.r_[part.value, np.ones(n, np.float32)].astype(np.float32),
            np.r_[part.event_type, np.zeros(n, np.int16)].astype(np.int16),
            n_real + n_fake, part.n_items, part.event_types, part.has_time,
            np.r_[part.row_id, first_id + np.arange(n)].astype(np.int64))

    attacked = Split(grown(split.train, True), grown(split.valid, False),
                     grown(split.test, False), split.method)
    return attacked, np.arange(n_real, n_real + n_fake)


def target_hit_rates(model: Recommender, histories: Histories, targets: np.ndarray,
                     ks: tuple[int, ...] = (10, 50)) -> dict[int, float]:
    """k -> mean over targets of the share of users (without the target in their history)
    whose top-k holds it."""
    lists = lists_of(model, histories, k=max(ks))
    out = {}
    for k in ks:
        rates = []
        for target in targets:
            has = np.array([target in histories.sequence(i) for i in range(len(histories))])
            hit = (lists[:, :k] == target).any(axis=1)
            rates.append(float(hit[~has].mean()) if (~has).any() else 0.0)
        out[k] = float(np.mean(rates))
    return out


# ---------------------------------------------------------------------- detection


def account_features(events: Interactions, groups: ItemGroups) -> np.ndarray:
    """(n_users, 8) features of each account's history."""
    csr = events.to_csr()
    counts = events.item_counts().astype(np.float64)
    log_pop = np.log1p(counts)
    top = np.zeros(events.n_items, bool)
    top[np.argsort(-counts, kind="stable")[:POPULAR]] = True
    lengths = np.diff(csr.indptr).astype(np.float64)
    safe = np.maximum(lengths, 1)
    mean_pop = (csr @ log_pop) / safe
    sq_pop = (csr @ log_pop ** 2) / safe
    std_pop = np.sqrt(np.maximum(sq_pop - mean_pop ** 2, 0))
    top_share = (csr @ top.astype(np.float64)) / safe
    genre = np.asarray(csr @ groups.genres) if groups.genres.shape[1] else np.zeros((len(
        lengths), 1))
    genre = genre / np.maximum(genre.sum(axis=1, keepdims=True), 1e-12)
    entropy = -(genre * np.log(np.where(genre > 0, genre, 1))).sum(axis=1)
    unit = normalize(csr).astype(np.float32).toarray()  # dense: BLAS, not a sparse product
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, 0)
    top5 = -np.sort(-similarity, axis=1)[:, :5]
    return np.column_stack([np.log1p(lengths), mean_pop, std_pop, top_share, entropy,
                            top5[:, 0], top5.mean(axis=1),
                            (similarity > 0.5).sum(axis=1)])


def train_detector(split: Split, groups: ItemGroups, *, share: float, filler: int,
                   n_targets: int, seed: int, kinds: tuple[AttackKind, ...] = ATTACKS,
                   real: Histories | None = None) -> HistGradientBoostingClassifier:
    """A detector trained on a simulated campaign of the attack ``kinds`` (its own targets
    and seed): the defender does not know the real attack."""
    rng = np.random.default_rng(seed + 1000)
    popularity = split.train.item_counts()
    targets = pick_targets(split.train, n_targets, seed + 1000)
    n_each = max(1, int(round(share * split.train.n_users / len(kinds))))
    sequences = [s for kind in kinds for s in fake_sequences(
        kind, n_each, filler, targets, popularity, groups, int(rng.integers(1 << 30)), real)]
    attacked, fakes = inject(split, sequences)
    features = account_features(attacked.train, groups)
    labels = np.isin(np.arange(attacked.train.n_users), fakes).astype(int)
    return HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(features,
                                                                               labels)


def fake_probability(detector: HistGradientBoostingClassifier, events: Interactions,
                     groups: ItemGroups) -> np.ndarray:
    """(n_users,) the detector's probability that each account of ``events`` is fake."""
    return detector.predict_proba(account_features(events, groups))[:, 1]


def run_manipulation(config: ExperimentConfig, dataset: Dataset, split: Split, *,
                     notify: Notify | None = None, from_run: Path | None = None) -> dict:
    """The manipulation audit's report (the ``--json`` object). ``from_run`` supplies the
    clean models; attacked ones are always fitted on the attacked data."""
    notify = notify or (lambda event, payload: None)
    started = time.perf_counter()
    options = config.audit.manipulation
    groups = item_groups(dataset, split.train)
    targets = pick_targets(split.train, options.targets, config.seed)
    popularity = split.train.item_counts()
    real = np.flatnonzero(np.diff(split.test.to_csr().indptr) > 0)
    histories = joined(split).histories(real)
    train_histories = split.train.histories()
    filler = options.filler or int(min(100, np.median(split.train.user_counts()[real])))
    entries = [m for m in config.models if not options.models or m.display in options.models]
    detectors: dict[str, HistGradientBoostingClassifier] = {}

    def detector_for(kind: AttackKind) -> HistGradientBoostingClassifier:
        """Trained on every attack kind but ``kind`` (built once per kind)."""
        if kind not in detectors:
            notify("detector", {"unknown_attack": kind})
            detectors[kind] = train_detector(
                split, groups, share=max(options.shares), filler=filler,
                n_targets=options.targets, seed=config.seed,
                kinds=tuple(k for k in ATTACKS if k != kind), real=train_histories)
        return detectors[kind]

    report: dict = {"name": config.name, "targets": [str(dataset.items.ids[t])
                                                     for t in targets],
                    "filler": filler, "attacks": [], "detection": []}
    detected: set[tuple[str, float]] = set()
    for entry in entries:
        if from_run is not None:
            clean = trained(from_run / entry.display, dataset, split)
        else:
            notify("fit_start", {"model": entry.display, "attack": None})
            clean = create(entry.name, entry.params).fit(split.train, valid=split.valid,
                                                          seed=config.seed)
        before = target_hit_rates(clean, histories, targets)
        clean_utility = evaluate(clean, split, [UTILITY], seed=config.seed
                                 ).summary[UTILITY].mean
        for kind in options.attacks_by_model.get(entry.display, options.attacks):
            for share in options.shares_by_model.get(entry.display, options.shares):
                n_fake = max(1, int(round(share * split.train.n_users)))
                sequences = fake_sequences(kind, n_fake, filler, targets, popularity, groups,
                                           config.seed, train_histories)
                attacked, fakes = inject(split, sequences)
                probability = fake_probability(detector_for(kind), attacked.train, groups)
                if (kind, share) not in detected:
                    detected.add((kind, share))
                    report["detection"].append(_detection(probability, fakes, kind, share))
                for defence in (None, *options.defences):
                    model = create(entry.name, entry.params)
                    weights = None
                    if defence is not None:
                        if not model.can(Capability.USER_WEIGHTS):
                            notify("skip", {"model": entry.display, "defence": defence,
                                            "reason": "the model cannot weigh users"})
                            continue
                        weights = 1.0 - probability
                        model.set_user_weights(weights)
                    notify("fit_start", {"model": entry.display, "attack": kind,
                                         "share": share, "defence": defence})
                    model.fit(attacked.train, valid=attacked.valid, seed=config.seed)
                    after = target_hit_rates(model, histories, targets)
                    utility = evaluate(model, attacked, [UTILITY], seed=config.seed
                                       ).summary[UTILITY].mean
                    row = {"attack": kind, "share": share, "model": entry.display,
                           "defence": defence,
                           "target_hr@50_before": before[50], "target_hr@50_after": after[50],
                           "target_hr@10_before": before[10], "target_hr@10_after": after[10],
                           "ndcg@10": utility, "ndcg@10_before": clean_utility,
                           "fake_users": len(fakes)}
                    if weights is not None:
                        is_fake = np.isin(np.arange(len(weights)), fakes)
                        row["weight_fake"] = float(weights[is_fake].mean())
                        row["weight_real"] = float(weights[~is_fake].mean())
                    report["attacks"].append(row)
    report["seconds"] = time.perf_counter() - started
    return report


def _detection(probability: np.ndarray, fakes: np.ndarray, kind: str, share: float) -> dict:
    labels = np.isin(np.arange(len(probability)), fakes).astype(int)
    flagged = (probability >= 0.5).astype(int)
    return {"attack": kind, "share": share,
            "precision": float(precision_score(labels, flagged, zero_division=0)),
            "recall": float(recall_score(labels, flagged)),
            "auc": float(roc_auc_score(labels, probability))}
