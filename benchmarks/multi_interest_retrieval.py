"""Retrieval through the ANN index: Recall@50 per interest (multi-interest models) against
exact scoring, and against a single-vector model on the same split.

    python benchmarks/multi_interest_retrieval.py configs/beauty-s3rec-comirec.toml \\
        runs/beauty-s3rec-comirec/comirec-sasrec runs/beauty-s3rec-sasrec/sasrec

For each artefact written by ``userlens run`` (models with ``INTERESTS`` or ``EMBEDDINGS``),
on the config's test split (history = train + valid, seen items excluded, as ``userlens run``
evaluates): Recall@50 and NDCG@10 of exact scoring, then of retrieval through a Faiss index
(HNSW and IVF at several depths): each of the K interests (or the one user vector) fetches
its top 50 + |seen| items, the hits merge by best score (what the service does). Reports the
recall, the overlap of the ANN top 50 with the exact top 50, and the microseconds per user.
Writes ``benchmarks/results/multi_interest_retrieval_<config>.json``.

``--pair RUN`` (an evaluated artefact or a stored per-user folder on the same data and
split, for example ``benchmarks/results/per_user/ml-1m-sasrec-ce-seed0``) adds a paired
test of exact scoring and of every ANN setting against that run, user by user, as
``userlens compare`` does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import machine

from userlens import artefact
from userlens.artefact import read_evaluation
from userlens.config import load_config
from userlens.data.datasets import find_mirror
from userlens.data.interactions import Histories, concatenate
from userlens.evaluation.compare import check_pairable, paired_test
from userlens.evaluation.runner import EvalResult, evaluate
from userlens.models.base import Capability, Recommender
from userlens.pipeline import load_data, make_split
from userlens.serving.engine import AnnIndex, build_ann, merge_hits

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("hnsw", 64), ("hnsw", 256), ("ivf", 8), ("ivf", 32)]
METRICS = ["recall@50", "ndcg@10"]


def query_vectors(model: Recommender, histories: Histories) -> np.ndarray:
    """(B, Q, d): K interest vectors, or one user vector, per user."""
    if model.can(Capability.INTERESTS):
        return model.interest_vectors(histories)
    return model.user_vectors(histories)[:, None, :]


class AnnRetrieval:
    """What ``evaluate`` calls (``recommend``), answered through the ANN index."""

    def __init__(self, model: Recommender, index: AnnIndex) -> None:
        self.model, self.index = model, index
        self.top: list[np.ndarray] = []

    def queries(self, histories: Histories) -> np.ndarray:
        return query_vectors(self.model, histories)

    def recommend(self, histories: Histories, k: int, *, exclude: bool = True,
                  allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = self.queries(histories)
        items = np.zeros((len(histories), k), np.int64)
        values = np.full((len(histories), k), -np.inf, np.float32)
        for row in range(len(histories)):
            seen = set(histories.sequence(row).tolist()) if exclude else set()
            found_v, found_i = merge_hits(*self.index.search(queries[row], k + len(seen)))
            keep = [j for j, item in enumerate(found_i.tolist()) if item not in seen][:k]
            items[row, :len(keep)], values[row, :len(keep)] = found_i[keep], found_v[keep]
        return items, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("artefacts", type=Path, nargs="+")
    parser.add_argument("--pair", type=Path, help="a run to pair every result with, per user")
    args = parser.parse_args()
    config = load_config(args.config)
    dataset = load_data(config.data, mirror=find_mirror())
    split = make_split(dataset, config.split, config.seed)
    baseline = None if args.pair is None else Paired(args.pair, {
        "data": {"fingerprint": dataset.interactions.fingerprint()}, "split": split.summary()})
    rows = []
    for path in args.artefacts:
        model = artefact.read(path).model
        if not model.has_item_vectors():
            raise SystemExit(f"{path}: {model.name} has no item vectors to index")
        started = time.perf_counter()
        exact = evaluate(model, split, METRICS, seed=config.seed)
        exact_seconds = time.perf_counter() - started
        exact_top = model.recommend(concat_histories(split, exact.users), 50)[0]
        n_queries = int(query_vectors(model, concat_histories(split, exact.users[:1])
                                      ).shape[1])  # K (+ short-term) or 1
        row = {"artefact": str(path), "model": model.name, "queries_per_user": n_queries,
               "exact": {**exact.means(), "us_per_user": 1e6 * exact_seconds / len(
                   exact.users), **paired_with(baseline, exact, args.config)}, "ann": []}
        print(f"{path}: exact recall@50 {exact.means()['recall@50']:.4f}"
              f"{paired_text(row['exact'])}", flush=True)
        for kind, depth in SETTINGS:
            retrieval = AnnRetrieval(model, build_ann(model.item_vectors(), kind=kind,
                                                      depth=depth))
            started = time.perf_counter()
            result = evaluate(retrieval, split, METRICS, seed=config.seed)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            ann_top = retrieval.recommend(concat_histories(split, result.users), 50)[0]
            overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(
                ann_top.tolist(), exact_top.tolist(), strict=True)])
            entry = {"kind": kind, "depth": depth, **result.means(),
                     "overlap_with_exact@50": float(overlap),
                     "us_per_user": 1e6 * seconds / len(result.users),
                     **paired_with(baseline, result, args.config)}
            row["ann"].append(entry)
            print(f"  {kind} depth {depth}: recall@50 {entry['recall@50']:.4f}, overlap "
                  f"{overlap:.3f}, {entry['us_per_user']:.0f} us/user{paired_text(entry)}",
                  flush=True)
        rows.append(row)
    out = ROOT / "benchmarks" / "results" / f"multi_interest_retrieval_{args.config.stem}.json"
    out.write_text(json.dumps({"config": str(args.config), "machine": machine(),
                               **({"paired_with": str(args.pair)} if args.pair else {}),
                               "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


class Paired:
    """The run ``--pair`` names: its per-user values, and what this benchmark's evaluations
    would write in a manifest (data, split) to check the two pair as ``userlens compare``
    checks two runs."""

    def __init__(self, path: Path, evaluation: dict) -> None:
        self.path, self.evaluation = path, evaluation
        self.manifest, self.values, self.users = read_evaluation(path)


def paired_with(baseline: Paired | None, result: EvalResult, config: Path) -> dict:
    """{"paired": {metric: paired test of result minus the baseline}} on the shared users."""
    if baseline is None:
        return {}
    try:
        check_pairable(baseline.manifest, {**baseline.evaluation, "protocol": result.protocol},
                       baseline.path, config)
    except ValueError as error:
        raise SystemExit(f"--pair: {error}") from None
    common, mine, theirs = np.intersect1d(result.users, baseline.users, return_indices=True)
    return {"paired": {"users": int(len(common)), **{
        metric: paired_test(baseline.values[metric][theirs], result.per_user[metric][mine])
        for metric in METRICS if metric in baseline.values}}}


def paired_text(entry: dict) -> str:
    if "paired" not in entry or "recall@50" not in entry["paired"]:
        return ""
    test = entry["paired"]["recall@50"]
    return f", {test['difference']:+.4f} against the paired run (p = {test['t_pvalue']:.2g})"


def concat_histories(split, users: np.ndarray) -> Histories:
    """The test-time histories (train + valid) of ``users``, as ``evaluate`` builds them."""
    return concatenate([split.train, split.valid]).histories(users)


if __name__ == "__main__":
    main()
