"""``userlens audit`` on real data (ML-100K, 943 users with gender, age and occupation)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from userlens.cli.main import app

runner = CliRunner()


def audit_config(tmp_path, shared_data, extra: str = "",
                 attributes: str = '["gender", "age"]') -> str:
    text = f"""
name = "ml-100k-audit"
seed = 0
[data]
path = "{shared_data / 'ml-100k' / 'ml-100k.inter'}"
format = "recbole"
[split]
method = "leave_one_out"
[[models]]
name = "ease"
params = {{ l2 = 200.0 }}
[[models]]
name = "als"
params = {{ factors = 16, iterations = 5 }}
[audit]
attributes = {attributes}
folds = 3
[audit.privacy]
classifiers = ["logistic"]
obfuscation = [0.05]
drop = [20]
inlp = [2]
{extra}
"""
    path = tmp_path / "audit.toml"
    path.write_text(text)
    return str(path)


def test_privacy_json_has_the_documented_shape(tmp_path, shared_data):
    config = audit_config(tmp_path, shared_data)
    result = runner.invoke(app, ["audit", "privacy", config, "--json",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    sources = {a["source"] for a in report["attacks"]}
    assert sources == {"history", "model:ease", "model:als", "profile"}
    for row in report["attacks"]:
        assert {"attribute", "source", "metric", "value", "ci95", "baseline"} <= set(row)
        assert row["metric"] == ("auc" if row["attribute"] == "gender" else "accuracy")
        assert row["ci95"][0] <= row["value"] <= row["ci95"][1]
    gender = next(a for a in report["attacks"]
                  if a["attribute"] == "gender" and a["source"] == "history")
    assert gender["value"] > 0.6  # ML-100K histories reveal gender (published: ~0.7-0.8)
    names = {(m["name"], m["model"]) for m in report["mitigations"]}
    assert {("none", "ease"), ("obfuscation", "ease"), ("drop_items", "als"),
            ("inlp", "ease"), ("inlp", "als")} <= names
    for row in report["mitigations"]:
        assert {"name", "attribute", "strength", "value", "model", "ndcg@10",
                "ndcg@10_before"} <= set(row)
        assert row["attribute"] == "gender"
    assert (tmp_path / "out" / "privacy.json").is_file()
    assert (tmp_path / "out" / "privacy_utility.png").stat().st_size > 1000


def test_fairness_table_and_json(tmp_path, shared_data):
    config = audit_config(tmp_path, shared_data,
                          '[audit.fairness]\nrerankers = ["calibrated:0.5", "exposure:0.5"]')
    result = runner.invoke(app, ["audit", "fairness", config, "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    assert "Largest NDCG@10 gap" in result.stdout
    report = json.loads((tmp_path / "f" / "fairness.json").read_text())
    assert {g["by"] for g in report["groups"]} == {"gender", "age", "activity",
                                                   "mainstreamness"}
    for row in report["groups"]:
        assert {"by", "group", "model", "ndcg@10", "ci95"} <= set(row)
    calibrated = next(r for r in report["rerankers"]
                      if r["model"] == "ease" and r["reranker"] == "calibrated:0.5")
    plain = next(r for r in report["rerankers"]
                 if r["model"] == "ease" and r["reranker"] is None)
    assert calibrated["calibration_kl"] < plain["calibration_kl"]
    exposure = next(r for r in report["rerankers"]
                    if r["model"] == "ease" and r["reranker"] == "exposure:0.5")
    assert exposure["tail_share"] > plain["tail_share"]
    assert (tmp_path / "f" / "fairness_groups.png").is_file()


@pytest.mark.parametrize("attribute", ["income"])
def test_a_missing_attribute_is_named(tmp_path, shared_data, attribute):
    config = audit_config(tmp_path, shared_data, attributes=f'["{attribute}"]')
    result = runner.invoke(app, ["audit", "privacy", config, "--json"])
    assert result.exit_code == 2
    assert f"attribute '{attribute}' is not in the user table" in result.output
    assert "gender" in result.output  # the columns there are


def test_manipulation_json_has_the_documented_shape(tmp_path, shared_data):
    config = audit_config(tmp_path, shared_data, '[audit.manipulation]\nattacks = ["bandwagon"]'
                          '\nshares = [0.05]\nmodels = ["ease"]')
    result = runner.invoke(app, ["audit", "manipulation", config, "--json",
                                 "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row, defended = report["attacks"]
    for each in (row, defended):
        assert {"attack", "share", "model", "defence", "target_hr@50_before",
                "target_hr@50_after", "ndcg@10"} <= set(each)
    assert (row["attack"], row["share"], row["model"], row["defence"]) == (
        "bandwagon", 0.05, "ease", None)
    assert row["target_hr@50_after"] > row["target_hr@50_before"]
    assert (defended["attack"], defended["model"], defended["defence"]) == (
        "bandwagon", "ease", "reweight")
    assert 0.0 <= defended["weight_fake"] <= 1.0 and 0.0 <= defended["weight_real"] <= 1.0
    [detected] = report["detection"]
    assert {"attack", "share", "precision", "recall", "auc"} <= set(detected)
    assert (tmp_path / "m" / "manipulation_lift.png").is_file()


def test_manipulation_names_an_unknown_model(tmp_path, shared_data):
    config = audit_config(tmp_path, shared_data,
                          '[audit.manipulation]\nshares_by_model = { sasrec = [0.03] }')
    result = runner.invoke(app, ["audit", "manipulation", config, "--json"])
    assert result.exit_code == 2
    assert "['sasrec']" in result.output
