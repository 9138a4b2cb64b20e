"""SASRec + cross-entropy on ML-1M: epoch time, time to quality, scoring latency, memory, and
RecBole's SASRec in the same run.

    python benchmarks/sasrec_ml1m.py --run runs/ml-1m-sasrec/sasrec    # reuse a trained artefact
    python benchmarks/sasrec_ml1m.py --recbole-batches 30               # + RecBole (needs recbole)
    python benchmarks/sasrec_ml1m.py --recbole-train --device cuda --time-limit 420 \
        --run runs/g-ml1m-sasrec-s1/sasrec   # train RecBole's SASRec to convergence as well
    python benchmarks/sasrec_ml1m.py --memory   # peak training memory, ours and RecBole's

Our curve (validation NDCG@10 against wall-clock seconds) comes from the artefact's
``results.json``, written by ``userlens run configs/ml-1m-sasrec.toml``. Scoring latency and
throughput are measured here on the loaded artefact. RecBole 1.2.1's SASRec is trained with
the same sizes (64-d, 2 blocks, 1 head, max length 200, dropout 0.1, CE loss, batch 128,
lr 1e-3) on the same data and leave-one-out split; it expands every prefix of every sequence
into a training sample, so its epoch does far more work than ours. Its epoch time is
extrapolated from timed optimisation steps (an epoch takes hours on 2 cores). With
``--recbole-train`` RecBole's own trainer trains it to convergence (validation NDCG@10 every
epoch, early stopping, best checkpoint tested once), on a GPU where there is one, and its
validation curve is plotted against ours. ``--memory`` trains each side for a few steps in a
fresh child process (``configs/ml-1m-sasrec.toml``'s parameters for ours) and reports each
process's peak resident memory, before and during training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from userlens.data import k_core, leave_one_out, read
from userlens.data.interactions import Histories
from userlens.evaluation import evaluate
from userlens.models.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
ML1M = ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m_user_sequences.tsv.gz"


def load_split(path: Path = ML1M, data_format: str = "sequences"):
    data = k_core(read(path, data_format), min_item=5)
    return data, leave_one_out(data.interactions)


def ours(run_dir: Path, split) -> dict:
    model = load_model(run_dir / "model")
    run = trained_run(run_dir)
    reached = next((t for t, ndcg in run["curve"] if ndcg is not None and ndcg >= 0.18), None)
    # epoch time on all cores, measured here: the artefact may come from a run that shared
    # the machine (or used fewer threads)
    from userlens.models import create

    params = {**json.loads((run_dir / "model" / "config.json").read_text()),
              "max_epochs": 3, "threads": None, "time_limit_seconds": None}
    timing = create("sasrec", params).fit(split.train, seed=0).training_
    fresh_epochs = [e["seconds"] for e in timing["epochs"][1:]]  # skip the first (warm-up)
    # scoring all test users, from their train + validation histories
    evaluate(model, split, ["ndcg@10"])  # warm-up
    started = time.perf_counter()
    test = evaluate(model, split, ["hr@10", "ndcg@10"])
    score_all = time.perf_counter() - started
    # one user with a 200-event history, one request at a time
    history = split.train.histories([int(np.argmax(split.train.user_counts()))])
    one = Histories.from_lists([history.sequence(0)[-200:].tolist()], n_items=model.n_items_)
    for _ in range(20):
        model.recommend(one, k=10)
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        model.recommend(one, k=10)
        latencies.append(time.perf_counter() - started)
    return {
        "test": test.means(),
        "epochs": run["epochs"],
        "best_epoch": run["best_epoch"],
        "median_epoch_seconds": float(np.median(fresh_epochs)),
        "median_epoch_seconds_in_the_run": run["median_epoch_seconds"],
        "train_seconds": run["train_seconds"],
        "seconds_to_valid_ndcg_0.18": reached,
        "curve": run["curve"],
        "score_all_test_users_seconds": score_all,
        "one_user_200_events_ms": {"p50": 1000 * float(np.median(latencies)),
                                   "p99": 1000 * float(np.percentile(latencies, 99))},
    }


def _recbole_config(split, tmp: str, device: str, epochs: int, batch_size: int):
    """RecBole 1.2.1 SASRec with our sizes, on our leave-one-out split written as atomic files."""
    # RecBole 1.2.1 re-creates NumPy 1 aliases from names NumPy 2 removed
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)
    from recbole.config import Config
    from recbole.model.sequential_recommender import SASRec

    folder = Path(tmp) / "ml1m5"
    folder.mkdir()
    every = [split.train, split.valid, split.test]
    users = np.concatenate([p.user_idx for p in every])
    items = np.concatenate([p.item_idx for p in every])
    times = np.concatenate([p.timestamp for p in every])
    order = np.lexsort((times, users))
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t}" for u, i, t in zip(users[order], items[order], times[order],
                                                  strict=True)]
    (folder / "ml1m5.inter").write_text("\n".join(lines) + "\n")
    return Config(model=SASRec, dataset="ml1m5", config_dict={
        "data_path": tmp, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                      "group_by": "user", "mode": "full"},
        "MAX_ITEM_LIST_LENGTH": 200, "hidden_size": 64, "inner_size": 64, "n_layers": 2,
        "n_heads": 1, "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1,
        "loss_type": "CE", "train_neg_sample_args": None, "learning_rate": 1e-3,
        "train_batch_size": batch_size, "eval_batch_size": 256, "epochs": epochs,
        "stopping_step": 10, "eval_step": 1,
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "device": device, "use_gpu": device != "cpu", "seed": 0, "reproducibility": True,
        "show_progress": False, "checkpoint_dir": str(Path(tmp) / "ckpt"),
        "worker": 0, "state": "ERROR"})


def recbole_sasrec(split, n_batches: int) -> dict:
    """Time RecBole's SASRec training steps and extrapolate to one epoch.

    RecBole turns every prefix of every training sequence into a sample (about 980k samples of
    up to 200 items on ML-1M), so one epoch takes far longer than ours; we time ``n_batches``
    real optimisation steps of its own model and loss and multiply by its batches per epoch.
    """
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import init_seed

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        config = _recbole_config(split, tmp, "cpu", epochs=1, batch_size=128)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        model = SASRec(config, train_data.dataset).to("cpu")
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step_seconds = []
        for index, interaction in enumerate(train_data):
            if index >= n_batches + 3:
                break
            started = time.perf_counter()
            loss = model.calculate_loss(interaction)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if index >= 3:  # skip warm-up steps
                step_seconds.append(time.perf_counter() - started)
        batches_per_epoch = len(train_data)
        samples = int(len(train_data.dataset))
    step = float(np.mean(step_seconds))
    return {"timed_batches": len(step_seconds), "seconds_per_batch": step,
            "batches_per_epoch": batches_per_epoch, "training_samples_per_epoch": samples,
            "epoch_seconds_extrapolated": step * batches_per_epoch}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _train_ours_for_memory(queue, epochs: int) -> None:
    """Child process: our shipped SASRec config, ``epochs`` epochs, all cores."""
    from userlens.config import load_config
    from userlens.models import create

    _, split = load_split()
    loaded = _peak_rss_bytes()
    config = load_config(ROOT / "configs" / "ml-1m-sasrec.toml")
    params = {**config.models[0].params, "max_epochs": epochs}
    started = time.perf_counter()
    create("sasrec", params).fit(split.train, seed=0)
    queue.put({"epochs": epochs, "seconds": time.perf_counter() - started,
               "peak_rss_bytes_after_loading_data": loaded,
               "peak_rss_bytes": _peak_rss_bytes()})


def _train_recbole_for_memory(queue, n_batches: int) -> None:
    """Child process: RecBole's SASRec with the same sizes, ``n_batches`` training steps."""
    _, split = load_split()
    loaded = _peak_rss_bytes()
    timing = recbole_sasrec(split, n_batches)
    queue.put({"timed_batches": timing["timed_batches"],
               "training_samples_per_epoch": timing["training_samples_per_epoch"],
               "peak_rss_bytes_after_loading_data": loaded,
               "peak_rss_bytes": _peak_rss_bytes()})


def in_fresh_process(target, *args) -> dict:
    """Run ``target(queue, *args)`` in a spawned process (nothing inherited from this one) and
    return what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(queue, *args))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {process.exitcode}")
    return result


def memory(epochs: int, recbole_batches: int) -> dict:
    report = {"userlens": in_fresh_process(_train_ours_for_memory, epochs)}
    print(json.dumps(report["userlens"]), file=sys.stderr, flush=True)
    if recbole_batches:
        report["recbole"] = in_fresh_process(_train_recbole_for_memory, recbole_batches)
        report["peak_rss_ratio_recbole_to_userlens"] = (report["recbole"]["peak_rss_bytes"]
                                                        / report["userlens"]["peak_rss_bytes"])
    return report


class _OutOfTime(Exception):
    pass


def recbole_train(split, device: str, time_limit: float, batch_size: int) -> dict:
    """Train RecBole's SASRec with its own trainer until early stopping (patience 10 epochs)
    or ``time_limit`` seconds, recording validation NDCG@10 against wall-clock seconds; the
    best checkpoint (on validation) is tested once."""
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    with tempfile.TemporaryDirectory() as tmp:
        config = _recbole_config(split, tmp, device, epochs=500, batch_size=batch_size)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        model = SASRec(config, train_data.dataset).to(config["device"])
        trainer = Trainer(config, model)
        curve: list[tuple[float, float]] = []
        best: dict = {}
        started = time.perf_counter()

        def after_epoch(epoch: int, valid_score: float) -> None:
            if not curve or valid_score > max(n for _, n in curve):  # the first best epoch
                best.update({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            curve.append((time.perf_counter() - started, float(valid_score)))
            print(f"recbole epoch {epoch}: valid ndcg@10 {valid_score:.4f} "
                  f"({curve[-1][0]:.0f} s)", file=sys.stderr, flush=True)
            if curve[-1][0] > time_limit:
                raise _OutOfTime

        stopped = "early stopping"
        try:
            trainer.fit(train_data, valid_data, saved=False, show_progress=False,
                        callback_fn=after_epoch)
        except _OutOfTime:
            stopped = "time limit"
        train_seconds = time.perf_counter() - started
        # RecBole's own checkpoint needs torch.load's pickle path; the weights are enough
        model.load_state_dict(best)
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    best_epoch = int(np.argmax([n for _, n in curve]))
    return {"device": device, "batch_size": batch_size, "stopped_by": stopped,
            "epochs": len(curve), "best_epoch": best_epoch + 1, "train_seconds": train_seconds,
            "median_epoch_seconds": float(np.median(np.diff([0.0] + [t for t, _ in curve]))),
            "test": {"hr@10": float(test["hit@10"]), "ndcg@10": float(test["ndcg@10"])},
            "curve": curve}


def plot(report: dict, path: Path, where: str = "2 CPU cores") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    curve = [(t, n) for t, n in report["userlens"]["curve"] if n is not None]
    axis.plot([t for t, _ in curve], [n for _, n in curve], marker=".",
              label="userlens SASRec (validation)")
    if "recbole_trained" in report:
        theirs = report["recbole_trained"]["curve"]
        axis.plot([t for t, _ in theirs], [n for _, n in theirs], marker=".", color="red",
                  label="RecBole SASRec (validation)")
    if "recbole" in report:
        epoch = report["recbole"]["epoch_seconds_extrapolated"]
        axis.axvline(epoch, color="red", linestyle=":",
                     label=f"one RecBole SASRec epoch ({epoch:,.0f} s, extrapolated)")
    axis.axhline(0.1821, color="grey", linestyle="--", label="published SASRec+ (test)")
    axis.set_xlabel(f"wall-clock seconds of training ({where})")
    axis.set_ylabel("NDCG@10 (full ranking)")
    axis.set_title("SASRec + CE on ML-1M")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def trained_run(run_dir: Path) -> dict:
    """Our side of a convergence comparison, read from a finished ``userlens run``."""
    results = json.loads((run_dir / "results.json").read_text())
    training = results["training"]
    return {"curve": [(e["elapsed"], e.get("valid_ndcg@10")) for e in training["epochs"]],
            "epochs": len(training["epochs"]), "best_epoch": training["best_epoch"],
            "train_seconds": training["seconds"],
            "median_epoch_seconds": float(np.median([e["seconds"]
                                                     for e in training["epochs"]])),
            "test": {k: v["mean"] for k, v in results["metrics"].items()
                     if k in ("hr@10", "ndcg@10")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "ml-1m-sasrec" / "sasrec")
    parser.add_argument("--recbole-batches", type=int, default=0,
                        help="time this many RecBole SASRec steps (needs recbole)")
    parser.add_argument("--recbole-train", action="store_true",
                        help="train RecBole's SASRec to convergence and compare curves with "
                             "the finished run --run (needs recbole)")
    parser.add_argument("--device", default="cpu", help="for --recbole-train: cpu or cuda")
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="for --recbole-train: stop RecBole after this many seconds")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="for --recbole-train: RecBole's training batch")
    parser.add_argument("--memory", action="store_true",
                        help="peak resident memory of training, ours (3 epochs) and RecBole's "
                             "(--recbole-batches steps), each in a fresh process")
    parser.add_argument("--data", type=Path, default=ML1M,
                        help="another dataset (to try the script out on a small one)")
    parser.add_argument("--format", default="sequences")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.memory:
        report = memory(3, args.recbole_batches)
        (args.out / "sasrec_ml1m_memory.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return
    _, split = load_split(args.data, args.format)
    if args.recbole_train:
        report = {"recbole_trained": recbole_train(split, args.device, args.time_limit,
                                                   args.batch_size)}
        # read after RecBole's run: ours may be training beside it
        report["userlens"] = trained_run(args.run)
        name = f"sasrec_ml1m_convergence_{args.device}"
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
        plot(report, args.out / f"{name}.png", where=args.device)
        print(json.dumps({side: {k: v for k, v in r.items() if k != "curve"}
                          for side, r in report.items()}, indent=2))
        return
    report = {"userlens": ours(args.run, split)}
    print(json.dumps({k: v for k, v in report["userlens"].items() if k != "curve"}),
          file=sys.stderr)
    if args.recbole_batches:
        report["recbole"] = recbole_sasrec(split, args.recbole_batches)
        report["epoch_speedup"] = (report["recbole"]["epoch_seconds_extrapolated"]
                                   / report["userlens"]["median_epoch_seconds"])
    report["process_peak_rss_bytes"] = _peak_rss_bytes()
    (args.out / "sasrec_ml1m.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "sasrec_ml1m.png")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
