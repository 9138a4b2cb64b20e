from pathlib import Path

import numpy as np
import pytest

from userlens.data import Interactions, leave_one_out, temporal
from userlens.data.interactions import Histories
from userlens.evaluation import Protocol, evaluate
from userlens.evaluation.compare import compare_runs
from userlens.models import EASE, MostPopular
from userlens.models.base import Recommender
from userlens.models.classic import MostPopularConfig


class Oracle(Recommender):
    """Knows each user's next item (for known-answer tests of the runner)."""

    name = "oracle"
    config_class = MostPopularConfig

    def __init__(self, answers: dict[int, int], n_items: int,
                 decoys: dict[int, int] | None = None) -> None:
        super().__init__()
        self.answers, self.n_items_, self.decoys = answers, n_items, decoys or {}
        self.popularity_ = np.zeros(n_items, np.float32)

    def fit(self, train, *, valid=None, seed=0):
        return self

    def _score(self, histories: Histories) -> np.ndarray:
        scores = np.zeros((len(histories), self.n_items_), np.float32)
        for row, user in enumerate(histories.user_idx):
            scores[row, self.answers[int(user)]] = 1.0
            if int(user) in self.decoys:
                scores[row, self.decoys[int(user)]] = 2.0
        return scores


def sequences(n_users=30, n_items=20, length=8, seed=0):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        chosen = rng.choice(n_items, size=length, replace=False)
        users += [user] * length
        items += chosen.tolist()
    return Interactions.from_arrays(np.array(users), np.array(items), n_items=n_items)


def test_oracle_scores_perfectly_and_popularity_does_not():
    events = sequences()
    split = leave_one_out(events)
    answers = dict(zip(split.test.user_idx.tolist(), split.test.item_idx.tolist(), strict=True))
    result = evaluate(Oracle(answers, 20), split, ["hr@1", "ndcg@10", "mrr@5", "auc"])
    assert result.means() == {"hr@1": 1.0, "ndcg@10": 1.0, "mrr@5": 1.0, "auc": 1.0}
    assert result.protocol == "full"
    popular = evaluate(MostPopular().fit(split.train), split, ["hr@1"])
    assert popular.means()["hr@1"] < 0.5


def test_seen_items_are_excluded_at_test_time():
    # the model ranks the validation item above the test item; at test time the validation
    # item is part of the history, so it is excluded and the test item comes first
    events = sequences()
    split = leave_one_out(events)
    valid_items = dict(zip(split.valid.user_idx.tolist(), split.valid.item_idx.tolist(),
                           strict=True))
    test_items = dict(zip(split.test.user_idx.tolist(), split.test.item_idx.tolist(),
                          strict=True))
    model = Oracle(test_items, 20, decoys=valid_items)
    assert evaluate(model, split, ["hr@1"]).means()["hr@1"] == 1.0
    # at validation time the validation item is the target and must be found first
    assert evaluate(model, split, ["hr@1"], stage="valid").means()["hr@1"] == 1.0
    # a train item ranked first would be excluded too: the decoy is a train item
    train_first = {u: int(split.train.item_idx[split.train.user_idx == u][0]) for u in test_items}
    assert evaluate(Oracle(test_items, 20, decoys=train_first), split,
                    ["hr@1"]).means()["hr@1"] == 1.0


def test_batch_size_does_not_change_results():
    events = sequences(n_users=50)
    split = leave_one_out(events)
    model = EASE().fit(split.train)
    metrics = ["hr@5", "ndcg@10", "coverage@5", "gini@5", "novelty@5", "auc"]
    one = evaluate(model, split, metrics, batch_size=1)
    many = evaluate(model, split, metrics, batch_size=17)
    for name in metrics:
        assert one.summary[name].mean == pytest.approx(many.summary[name].mean)
    assert np.array_equal(one.per_user["ndcg@10"], many.per_user["ndcg@10"])


def test_sampled_protocol_is_labelled_and_easier():
    events = sequences(n_users=40, n_items=200, length=10)
    split = leave_one_out(events)
    model = MostPopular().fit(split.train)
    full = evaluate(model, split, ["hr@10"])
    sampled = evaluate(model, split, ["hr@10"], protocol=Protocol(kind="sampled", n_negatives=20))
    assert sampled.protocol == "sampled-uniform-20"
    assert sampled.means()["hr@10"] > full.means()["hr@10"]


def test_confidence_interval_contains_mean():
    split = leave_one_out(sequences(n_users=60))
    summary = evaluate(MostPopular().fit(split.train), split, ["ndcg@10"]).summary["ndcg@10"]
    assert summary.ci_low <= summary.mean <= summary.ci_high
    assert summary.n == 60


def test_repeat_targets_are_removed_and_counted():
    events = Interactions.from_arrays(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 2, 0]),
                                      timestamp=np.array([1, 2, 10, 1, 2, 11]))
    split = temporal(events, cut=10)
    result = evaluate(MostPopular().fit(split.train), split, ["hr@2"])
    assert result.info["targets_removed_as_repeats"] == 1
    assert result.info["users"] == 1


def test_compare_runs_detects_a_real_difference(tmp_path):
    from userlens.config import ExperimentConfig
    from userlens.evaluation.experiment import run_experiment

    users, items = [], []
    rng = np.random.default_rng(1)
    for user in range(200):
        group = range(0, 10) if user % 2 else range(10, 20)
        chosen = rng.choice(list(group), size=6, replace=False)
        users += [user] * 6
        items += chosen.tolist()
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id\n" + "\n".join(f"{u},{i}" for u, i in zip(users, items,
                                                                             strict=True)))
    config = ExperimentConfig.model_validate({
        "name": "cmp", "data": {"path": str(log), "format": "csv"},
        "evaluation": {"metrics": ["ndcg@5"]},
        "models": [{"name": "most_popular"}, {"name": "ease", "params": {"l2": 1.0}}]})
    run_experiment(config, tmp_path / "runs")
    result = compare_runs(tmp_path / "runs" / "most_popular", tmp_path / "runs" / "ease")
    row = result["metrics"][0]
    assert row["b"] > row["a"] and row["t_pvalue"] < 0.01
    assert result["users"] == 200


def test_other_ranks_fit_only_the_distributed_models(tmp_path, monkeypatch):
    from userlens.config import ExperimentConfig
    from userlens.evaluation.experiment import run_experiment
    from userlens.models.classic import EASE

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id\n" + "\n".join(f"{u},{i}" for u in range(20)
                                                   for i in range(u % 5, u % 5 + 4)))
    config = ExperimentConfig.model_validate({
        "name": "ranks", "data": {"path": str(log), "format": "csv"},
        "models": [{"name": "ease", "params": {"l2": 1.0}}]})

    def refuse(self, *args, **kwargs):
        raise AssertionError("a rank other than 0 fitted a model that is not distributed")

    monkeypatch.setattr(EASE, "fit", refuse)
    assert run_experiment(config, tmp_path / "runs", rank=1, world_size=2) is None
    assert not (tmp_path / "runs").exists()


def test_the_stored_ml1m_sasrec_evaluation_pairs_with_a_run_made_today(tmp_path, shared_data):
    """benchmarks/results/per_user/ml-1m-sasrec-ce-seed0 holds one SASRec + CE run's per-user
    test values so later runs on the file can be paired without training it again: today's
    reading and split of the file must still match it (same fingerprint, split, users)."""
    from userlens.config import ExperimentConfig
    from userlens.evaluation.experiment import run_experiment

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    stored = results / "per_user" / "ml-1m-sasrec-ce-seed0"
    config = ExperimentConfig.model_validate({
        "name": "pair", "data": {"dataset": "ml-1m-sasrec"},
        "split": {"method": "leave_one_out"},
        "evaluation": {"metrics": ["hr@10", "ndcg@10"]},
        "models": [{"name": "most_popular"}]})
    run_experiment(config, tmp_path / "runs", mirror=shared_data)
    result = compare_runs(stored, tmp_path / "runs" / "most_popular")
    assert result["users"] == 6040
    ndcg = next(row for row in result["metrics"] if row["metric"] == "ndcg@10")
    assert 0.17 < ndcg["a"] < 0.19  # the stored SASRec + CE run (0.1789)
    assert ndcg["b"] < ndcg["a"] and ndcg["t_pvalue"] < 1e-10
