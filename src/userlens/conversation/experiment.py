"""``userlens run`` for a config with a ``[conversation]`` section: train the estimator and
the learned policies, then play every test pair once with the user simulator.

Protocol (EAR / SCPR): the published train / valid / test pairs as they are; the estimator
and the policies are selected on validation pairs only; each test pair is one episode.
Written to the run folder: ``results.json`` (the report), ``estimator/`` (the FM, npz),
``policy-<name>.npz``, ``success_by_turn.png``, and the servable bundle
(:mod:`userlens.conversation.bundle`; it serves SCPR when trained, else EAR, else
max-entropy).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from userlens.config import ConversationConfig
from userlens.conversation.bundle import ConversationBundle
from userlens.conversation.data import CRSData, load_crs, resolve_crs
from userlens.conversation.estimator import fit_estimator
from userlens.conversation.policies import LearnedPolicy, make_policy
from userlens.conversation.session import Conversations
from userlens.conversation.simulator import UserSimulator, evaluate


def load_conversation_data(dataset: str | None, path: str | None, *, mirror: Path | None,
                           tag_names: str | None = None) -> CRSData:
    if path is not None:
        return load_crs(path, tag_names=tag_names)
    if dataset is None:
        raise ValueError("data: give data.dataset (crs-lastfm-ear, crs-lastfm-star) or "
                         "data.path (a folder in their format)")
    return load_crs(resolve_crs(dataset, mirror), name=dataset, tag_names=tag_names)


def prior_scores(data: CRSData, name: str, params: dict, *, seed: int = 0) -> np.ndarray:
    """(n_users, n_items) scores of a userlens model fitted on the training pairs, each
    user's row standardised (mean 0, standard deviation 1) over the items; the user's own
    training items get the row's minimum."""
    from userlens.data.interactions import Histories, Interactions
    from userlens.models.registry import create

    pairs = data.pairs["train"]
    n = len(pairs)
    train = Interactions(pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32),
                         np.arange(n, dtype=np.int64), np.ones(n, np.float32),
                         np.zeros(n, np.int16), data.n_users, data.n_items, has_time=False)
    model = create(name, params).fit(train, seed=seed)
    by_user = [[] for _ in range(data.n_users)]
    for user, item in pairs:
        by_user[user].append(int(item))
    scores = np.asarray(model.score(Histories.from_lists(by_user, data.n_items)),
                        dtype=np.float32)
    scores -= scores.mean(1, keepdims=True)
    scores /= np.maximum(scores.std(1, keepdims=True), 1e-6)
    # a conversation looks for something new: the user's own items get the row's minimum
    scores[pairs[:, 0], pairs[:, 1]] = scores.min(1)[pairs[:, 0]]
    return scores


def run_conversation(name: str, data: CRSData, config: ConversationConfig, target: Path, *,
                     seed: int = 0, on_event: Callable[[str, dict], None] | None = None
                     ) -> dict:
    emit = on_event or (lambda event, payload: None)
    target.mkdir(parents=True, exist_ok=True)
    emit("data", {"users": data.n_users, "items": data.n_items,
                  "interactions": int(sum(len(p) for p in data.pairs.values())), "seconds": 0.0})
    started = time.perf_counter()
    emit("fit_start", {"model": "estimator"})
    estimator, history = fit_estimator(
        data, config.estimator, seed=seed,
        on_epoch=lambda row: emit("estimator_epoch", {"model": "estimator", **row}))
    estimator_seconds = time.perf_counter() - started
    emit("fit_end", {"model": "estimator", "seconds": estimator_seconds})
    prior = None
    if config.prior is not None and config.prior_weight > 0:
        emit("fit_start", {"model": f"prior {config.prior.display}"})
        prior = prior_scores(data, config.prior.name, config.prior.params, seed=seed)
    conversations = Conversations.from_config(data, estimator, config, prior)
    # what each simulated user already has: their training pairs while policies learn and
    # are selected, their training and validation pairs when the test pairs are played
    simulator = UserSimulator(data, ("train",))
    test_simulator = UserSimulator(data, ("train", "valid"))
    test = data.pairs["test"]
    if config.test_pairs is not None and config.test_pairs < len(test):
        test = test[np.random.default_rng(seed).choice(len(test), config.test_pairs,
                                                       replace=False)]
    results, trained = [], {}
    for policy_name in config.policies:
        policy = make_policy(policy_name, n_attributes=data.n_attributes,
                             max_turns=config.max_turns, training=config.training, seed=seed)
        emit("fit_start", {"model": policy_name})
        started = time.perf_counter()
        training = None
        if isinstance(policy, LearnedPolicy):  # SCPR and EAR train on simulated conversations
            policy.fit(conversations, simulator, data.pairs["train"], data.pairs["valid"],
                       max_turns=config.max_turns,
                       on_progress=lambda row, n=policy_name: emit("policy_check",
                                                                   {"model": n, **row}))
            policy.save(target)
            training = policy.history
        trained[policy_name] = policy
        fit_seconds = time.perf_counter() - started
        emit("fit_end", {"model": policy_name, "seconds": fit_seconds})
        started = time.perf_counter()
        summary = evaluate(conversations, test_simulator, policy, test, seed=seed,
                           max_turns=config.max_turns,
                           on_progress=lambda done, total, n=policy_name: emit(
                               "eval_progress", {"model": n, "done": done, "total": total}))
        eval_seconds = time.perf_counter() - started
        metrics = {k: summary[k] for k in ("sr@5", "sr@10", f"sr@{config.max_turns}", "at")}
        emit("eval_end", {"model": policy_name, "metrics": metrics})
        results.append({"model": policy_name, "metrics": metrics,
                        "ci95": {f"sr@{config.max_turns}": summary["ci95_sr"]},
                        "users": summary["episodes"], "targets_dropped": 0,
                        "fit_seconds": fit_seconds, "eval_seconds": eval_seconds,
                        "questions_per_episode": summary["questions_per_episode"],
                        "success_by_turn": summary["curve"], "training": training})
    report = {"name": name, "data": data.summary(),
              "split": {"method": "published", "train": int(len(data.pairs["train"])),
                        "valid": int(len(data.pairs["valid"])), "test": int(len(test))},
              "tie_rule": "none (the published pairs, no timestamps)",
              "protocol": {"kind": "conversation", "simulator": "EAR/SCPR: opens with one "
                           "attribute of the target, yes iff the item has the attribute, "
                           "accepts a list containing the target",
                           "max_turns": config.max_turns, "list_size": config.list_size,
                           "drop_rejected_attributes": config.drop_rejected_attributes,
                           "exclude_history": config.exclude_history,
                           "reflection_rate": config.reflection_rate, "seed": seed},
              "estimator": {"seconds": estimator_seconds, "epochs": history,
                            **config.estimator.model_dump()},
              "results": results}
    served = next((p for p in ("scpr", "ear", "max_entropy") if p in trained),
                  config.policies[0])
    ConversationBundle(conversations, trained[served], data.attribute_names,
                       config.max_turns).save(target, extra={"dataset": data.name})
    report["served_policy"] = served
    (target / "results.json").write_text(json.dumps(report, indent=2))
    _plot(report, target / "success_by_turn.png")
    return report


def _plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot extra is optional
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in report["results"]:
        curve = row["success_by_turn"]
        axis.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=row["model"])
    axis.set_xlabel("turn")
    axis.set_ylabel("success rate by turn")
    axis.set_title(f"{report['name']}: {report['split']['test']} test conversations")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
