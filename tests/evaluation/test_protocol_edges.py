"""The evaluation's sharp edges: split identity in compare, repeat targets as a protocol
choice, the tie rule, an end-to-end known answer on ML-100K, reproducible shipped configs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from userlens.config import ExperimentConfig, Protocol, load_config
from userlens.data.interactions import Interactions
from userlens.data.splits import leave_one_out
from userlens.evaluation import evaluate
from userlens.evaluation.compare import compare_runs
from userlens.evaluation.experiment import run_experiment
from userlens.models.classic import MostPopular

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _log(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    lines = ["user_id,item_id,timestamp"]
    for user in range(120):
        group = range(0, 10) if user % 2 else range(10, 20)
        for t, item in enumerate(rng.choice(list(group), size=7, replace=False)):
            lines.append(f"{user},{item},{1000 + 100 * t + user}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path: Path, name: str, split: dict, seed: int = 0) -> Path:
    config = ExperimentConfig.model_validate({
        "name": name, "seed": seed, "data": {"path": str(_log(tmp_path)), "format": "csv"},
        "split": split, "evaluation": {"metrics": ["ndcg@5"]},
        "models": [{"name": "ease", "params": {"l2": 1.0}}]})
    run_experiment(config, tmp_path / name)
    return tmp_path / name / "ease"


def test_compare_refuses_runs_whose_splits_differ(tmp_path):
    a = _run(tmp_path, "a", {"method": "user_holdout", "test_fraction": 0.3}, seed=0)
    b = _run(tmp_path, "b", {"method": "user_holdout", "test_fraction": 0.3}, seed=1)
    with pytest.raises(ValueError, match="different splits.*seed"):
        compare_runs(a, b)
    c = _run(tmp_path, "c", {"method": "temporal", "test_fraction": 0.2})
    d = _run(tmp_path, "d", {"method": "temporal", "test_fraction": 0.3})
    with pytest.raises(ValueError, match="different splits.*test_fraction"):
        compare_runs(c, d)
    with pytest.raises(ValueError, match="different splits.*method"):
        compare_runs(a, c)
    # the same split twice is comparable (and a model equals itself)
    e = _run(tmp_path, "e", {"method": "user_holdout", "test_fraction": 0.3}, seed=0)
    result = compare_runs(a, e)
    assert all(row["difference"] == 0 for row in result["metrics"])


def test_repeat_targets_are_a_protocol_choice():
    # user 0 re-watches item 1 (a repeat target); user 1's target is new
    events = Interactions.from_arrays(np.array([0, 0, 0, 1, 1, 1]),
                                      np.array([1, 2, 1, 1, 2, 3]),
                                      timestamp=np.array([1, 2, 3, 1, 2, 3]), n_items=4)
    split = leave_one_out(events, validation=False)
    model = MostPopular().fit(split.train)
    excluded = evaluate(model, split, ["hr@2"])
    assert excluded.info["users"] == 1 and excluded.info["targets_removed_as_repeats"] == 1
    assert excluded.protocol == "full"
    included = evaluate(model, split, ["hr@2"], protocol=Protocol(repeats="include"))
    assert included.info["users"] == 2 and included.info["targets_removed_as_repeats"] == 0
    assert included.protocol == "full+repeats"
    # popularity over train: item 1 x2, item 2 x2 -> top 2 = {1, 2}: user 0's repeat is a hit
    assert included.per_user["hr@2"].tolist() == [1.0, 0.0]


def test_leave_one_out_breaks_same_second_ties_by_file_order():
    # both users' last two events share a second; the one listed later in the file is test
    events = Interactions.from_arrays(np.array([0, 0, 0, 1, 1, 1]),
                                      np.array([5, 7, 6, 4, 3, 2]),
                                      timestamp=np.array([10, 20, 20, 30, 30, 30]), n_items=8)
    split = leave_one_out(events)
    test = dict(zip(split.test.user_idx.tolist(), split.test.item_idx.tolist(), strict=True))
    valid = dict(zip(split.valid.user_idx.tolist(), split.valid.item_idx.tolist(), strict=True))
    assert test == {0: 6, 1: 2} and valid == {0: 7, 1: 3}


def test_reports_name_the_tie_rule_and_count_users_and_dropped_targets(tmp_path):
    run = _run(tmp_path, "r", {"method": "leave_one_out"})
    import json

    report = json.loads((run.parent / "report.json").read_text())
    assert report["tie_rule"] == "file order"
    assert report["results"][0]["users"] == 120
    assert report["results"][0]["targets_dropped"] == 0


def test_every_shipped_bpr_config_is_single_threaded():
    found = 0
    for path in CONFIGS.glob("*.toml"):
        for model in tomllib.loads(path.read_text()).get("models", []):
            if model["name"] == "bpr":
                found += 1
                assert model.get("params", {}).get("num_threads") == 1, path.name
    assert found >= 2


def test_ml100k_end_to_end_known_answer(shared_data, tmp_path):
    """The shipped ML-100K config's split (leave-one-out on timestamps, file order in ties)
    and full ranking: MostPopular hits 81 of 943 users, EASE (lambda 250) 132 of 943. Both
    counts were computed by an independent re-implementation (pandas + numpy, no userlens
    code) of that protocol."""
    config = load_config(CONFIGS / "ml-100k-baselines.toml")
    models = [m for m in config.models if m.name in ("most_popular", "ease")]
    config = config.model_copy(update={
        "models": models,
        "evaluation": config.evaluation.model_copy(update={"metrics": ["hr@10"]})})
    report = run_experiment(config, tmp_path / "ml100k")
    hits = {r["model"]: round(r["metrics"]["hr@10"] * r["users"]) for r in report["results"]}
    assert {r["users"] for r in report["results"]} == {943}
    assert hits == {"most_popular": 81, "ease": 132}
