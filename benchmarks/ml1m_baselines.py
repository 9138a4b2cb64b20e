"""ML-1M baselines: ingest, fit and full-ranking evaluation speed, memory, and RecBole parity.

Runs everything in one process on this machine, so ratios are like for like:

    python benchmarks/ml1m_baselines.py [--no-recbole] [--out FILE.json]

Protocol for the leaderboard: ML-1M, items with >= 5 interactions (6,040 users / 3,416 items /
999,611 events), leave-one-out (last event test, second-to-last validation), full ranking, the
user's train and validation items excluded.

Protocol for the RecBole comparison: RecBole's ItemKNN and EASE score from the training
matrix only, so both libraries use RecBole's "LS test_only" split here (last event test,
everything else train, no validation) and the same full ranking with train items excluded.
RecBole (1.2.1, PyPI) must be importable for that part; it needs torch and numpy<2.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _machine import machine

from userlens.data import k_core, leave_one_out, read
from userlens.evaluation import evaluate
from userlens.models import create

ROOT = Path(__file__).resolve().parents[1]
ML1M = ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m_user_sequences.tsv.gz"
MODELS = [
    ("most_popular", {}),
    ("itemknn", {"neighbors": 100, "shrinkage": 10.0}),
    ("ease", {"l2": 500.0}),
    ("als", {"factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15}),
    ("bpr", {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": 100,
             "num_threads": 1}),
]


def best_of(repeats, function):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def load():
    return k_core(read(ML1M, "sequences"), min_item=5)


def userlens_leaderboard() -> dict:
    ingest_seconds, data = best_of(3, load)
    assert data.summary() == {"users": 6040, "items": 3416, "interactions": 999_611}
    split = leave_one_out(data.interactions)
    rows = []
    for name, params in MODELS:
        started = time.perf_counter()
        model = create(name, params).fit(split.train, seed=0)
        fit_seconds = time.perf_counter() - started
        evaluate(model, split, ["hr@10"])  # warm-up (first-call allocations)
        eval_seconds, result = best_of(3, lambda m=model: evaluate(
            m, split, ["hr@10", "ndcg@10", "mrr@10", "coverage@10"]))
        rows.append({"model": name, "params": params, "fit_seconds": fit_seconds,
                     "eval_seconds": eval_seconds, **result.means(),
                     "ci95": {k: [s.ci_low, s.ci_high] for k, s in result.summary.items()}})
        print(f"userlens {name:13s} fit {fit_seconds:6.2f}s eval {eval_seconds:5.2f}s "
              f"HR@10 {result.means()['hr@10']:.4f} NDCG@10 {result.means()['ndcg@10']:.4f}",
              file=sys.stderr)
    # evaluation peak memory of a matrix model (Python-level allocations, numpy included)
    ease = create("ease", {"l2": 500.0}).fit(split.train)
    tracemalloc.start()
    evaluate(ease, split, ["hr@10", "ndcg@10"])
    _, eval_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"ingest_seconds": ingest_seconds, "results": rows,
            "eval_peak_traced_bytes": eval_peak}


def parity_with_recbole() -> dict:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import EASE as RecBoleEASE
    from recbole.model.general_recommender import ItemKNN as RecBoleItemKNN
    from recbole.trainer import TraditionalTrainer
    from recbole.utils import init_seed

    torch.set_num_threads(2)
    data = load()
    events = data.interactions
    split = leave_one_out(events, validation=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml1m5"
        folder.mkdir()
        order = events.chronological_order()
        lines = ["user_id:token\titem_id:token\ttimestamp:float"]
        lines += [f"{u}\t{i}\t{t}" for u, i, t in zip(events.user_idx[order],
                                                      events.item_idx[order],
                                                      events.timestamp[order], strict=True)]
        (folder / "ml1m5.inter").write_text("\n".join(lines) + "\n")
        for name, ours_name, params, recbole_class, recbole_params in (
            ("itemknn", "itemknn", {"neighbors": 100, "shrinkage": 0.0}, RecBoleItemKNN,
             {"k": 100, "shrink": 0.0}),
            ("ease", "ease", {"l2": 500.0}, RecBoleEASE, {"reg_weight": 500.0}),
        ):
            config = Config(model=recbole_class, dataset="ml1m5", config_dict={
                "data_path": tmp, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "eval_args": {"split": {"LS": "test_only"}, "order": "TO", "group_by": "user",
                              "mode": "full"},
                "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
                "epochs": 1, "eval_batch_size": 4096, "train_batch_size": 2 ** 20,
                "device": "cpu", "use_gpu": False, "seed": 0, "reproducibility": True,
                "show_progress": False, "checkpoint_dir": str(Path(tmp) / "ckpt"),
                "worker": 0, "state": "ERROR", **recbole_params})
            init_seed(config["seed"], config["reproducibility"])
            dataset = create_dataset(config)
            train_data, _, test_data = data_preparation(config, dataset)
            started = time.perf_counter()
            model = recbole_class(config, train_data.dataset).to("cpu")
            trainer = TraditionalTrainer(config, model)
            trainer.fit(train_data, valid_data=None, saved=False, show_progress=False)
            recbole_fit = time.perf_counter() - started
            started = time.perf_counter()
            recbole_metrics = trainer.evaluate(test_data, load_best_model=False,
                                               show_progress=False)
            recbole_eval = time.perf_counter() - started

            started = time.perf_counter()
            ours = create(ours_name, params).fit(split.train)
            ours_fit = time.perf_counter() - started
            started = time.perf_counter()
            result = evaluate(ours, split, ["hr@10", "ndcg@10"])
            ours_eval = time.perf_counter() - started
            row = {
                "recbole": {"hr@10": float(recbole_metrics["hit@10"]),
                            "ndcg@10": float(recbole_metrics["ndcg@10"]),
                            "fit_seconds": recbole_fit, "eval_seconds": recbole_eval},
                "userlens": {**result.means(), "fit_seconds": ours_fit,
                             "eval_seconds": ours_eval},
            }
            row["fit_speedup"] = recbole_fit / ours_fit
            row["eval_speedup"] = recbole_eval / ours_eval
            row["abs_diff"] = {m: abs(row["recbole"][m] - row["userlens"][m])
                               for m in ("hr@10", "ndcg@10")}
            out[name] = row
            print(f"{name}: {json.dumps(row)}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-recbole", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "ml1m_baselines.json")
    args = parser.parse_args()
    report = {"machine": machine(platform=platform.platform()),
              "userlens": userlens_leaderboard()}
    if not args.no_recbole:
        report["recbole_parity"] = parity_with_recbole()
    report["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
