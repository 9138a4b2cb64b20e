import json

import numpy as np
import pytest
from typer.testing import CliRunner

from userlens.cli.main import app

runner = CliRunner()


@pytest.fixture
def log_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for user in range(60):
        group = range(0, 12) if user % 2 else range(12, 24)
        for t, item in enumerate(rng.choice(list(group), size=7, replace=False)):
            lines.append(f"u{user},i{item},{1000 + 10 * user + t}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(tmp_path, log_file, extra_data="", models=None, metrics='["hr@5", "ndcg@5"]'):
    models = models or ['name = "most_popular"', 'name = "ease"\nparams = { l2 = 10.0 }']
    text = (f'name = "toy"\nseed = 0\n[data]\npath = "{log_file}"\nformat = "csv"\n{extra_data}'
            f'[evaluation]\nmetrics = {metrics}\n'
            + "".join(f"[[models]]\n{m}\n" for m in models))
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return path


def test_run_json_has_the_documented_shape(tmp_path, log_file):
    config = write_config(tmp_path, log_file)
    result = runner.invoke(app, ["run", str(config), "--json", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"name", "data", "split", "tie_rule", "protocol", "results"}
    assert report["tie_rule"] == "file order"
    assert report["data"] == {"users": 60, "items": 24, "interactions": 420}
    assert report["protocol"] == "full" and report["split"] == "leave_one_out"
    assert [r["model"] for r in report["results"]] == ["most_popular", "ease"]
    for entry in report["results"]:
        assert set(entry) == {"model", "metrics", "ci95", "users", "targets_dropped",
                              "fit_seconds", "eval_seconds"}
        assert set(entry["metrics"]) == {"hr@5", "ndcg@5"}
        assert entry["users"] == 60 and entry["targets_dropped"] == 0
        low, high = entry["ci95"]["hr@5"]
        assert low <= entry["metrics"]["hr@5"] <= high
    ease, popular = report["results"][1]["metrics"], report["results"][0]["metrics"]
    assert ease["hr@5"] > popular["hr@5"]
    artefact = tmp_path / "out" / "ease"
    for name in ("model/model.json", "model/arrays.npz", "users.json", "items.json",
                 "manifest.json", "results.json", "per_user.npz"):
        assert (artefact / name).exists(), name
    manifest = json.loads((artefact / "manifest.json").read_text())
    assert len(manifest["data"]["fingerprint"]) == 64 and manifest["seed"] == 0


def test_table_output_and_plot(tmp_path, log_file):
    config = write_config(tmp_path, log_file)
    plot = tmp_path / "board.png"
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                 "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "most_popular" in result.stdout and "ndcg@5" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra, models, metrics, expected", [
    ("min_item_interaction = 5\n", None, '["hr@5"]', "data.min_item_interaction: unknown key"),
    ("", ['name = "eas"'], '["hr@5"]', "known models: most_popular, itemknn, ease, als, bpr"),
    ("", ['name = "ease"\nparams = { lambda = 3 }'], '["hr@5"]', "params.lambda"),
    ("", None, '["ndcg@5", "hitrate@5"]', "unknown metric 'hitrate@5'"),
])
def test_config_errors_name_the_problem(tmp_path, log_file, extra, models, metrics, expected):
    config = write_config(tmp_path, log_file, extra, models, metrics)
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_empty_after_filtering_names_the_filter(tmp_path, log_file):
    config = write_config(tmp_path, log_file, "min_item_interactions = 1000\n")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "k_core(min_user=0, min_item=1000)" in " ".join(result.output.split())


def test_a_failed_run_leaves_the_previous_one_intact(tmp_path, log_file):
    out = tmp_path / "out"
    good = write_config(tmp_path, log_file)
    assert runner.invoke(app, ["run", str(good), "--out", str(out)]).exit_code == 0
    before = (out / "report.json").read_text()
    # the second model fails after the first was fitted and written
    bad = write_config(tmp_path, log_file, models=[
        'name = "most_popular"', 'name = "ease"\nparams = { max_items = 3 }'])
    result = runner.invoke(app, ["run", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "max_items" in result.output
    assert (out / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_malformed_data_is_reported_with_line(tmp_path, log_file):
    log_file.write_text(log_file.read_text() + "u1,i3,notatime\n")
    config = write_config(tmp_path, log_file)
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "line 422" in result.output and "timestamp" in result.output


def test_describe_json(log_file):
    result = runner.invoke(app, ["describe", str(log_file), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["users"] == 60 and stats["events"] == 420


def test_compare_cli(tmp_path, log_file):
    config = write_config(tmp_path, log_file)
    runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    result = runner.invoke(app, ["compare", str(tmp_path / "out" / "most_popular"),
                                 str(tmp_path / "out" / "ease"), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["metric"]: row for row in json.loads(result.stdout)["metrics"]}
    assert rows["hr@5"]["b"] > rows["hr@5"]["a"]


def test_datasets_list_uses_the_mirror(shared_data, monkeypatch):
    monkeypatch.setenv("USERLENS_DATA_MIRROR", str(shared_data))
    result = runner.invoke(app, ["datasets", "list", "--json"])
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["ml-1m"]["local"].endswith("ml-1m_user_sequences.tsv.gz")
    assert "GroupLens" in rows["ml-1m"]["licence"]
    result = runner.invoke(app, ["datasets", "fetch", "ml-100k"])
    assert result.exit_code == 0 and "ml-100k.inter" in result.stdout


def test_fetch_unknown_dataset_lists_known(monkeypatch, tmp_path):
    monkeypatch.setenv("USERLENS_DATA_HOME", str(tmp_path))
    result = runner.invoke(app, ["datasets", "fetch", "ml-2m"])
    assert result.exit_code == 2 and "known datasets: ml-100k" in result.output


SASREC_TINY = ('name = "sasrec"\nparams = { max_epochs = 3, max_len = 8, dim = 16, '
               'batch_size = 16, threads = 1 }')


@pytest.mark.slow
def test_run_with_two_processes(tmp_path, log_file):
    import subprocess
    import sys

    config = write_config(tmp_path, log_file, models=[SASREC_TINY])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "userlens.cli.main", "run", str(config),
                           "--nproc", "2", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["results"][0]["model"] == "sasrec"
    assert (out / "sasrec" / "model" / "arrays.npz").exists()


@pytest.mark.slow
def test_reuse_with_two_processes_trains_the_rest_together(tmp_path, log_file):
    """A reused model is trained by no rank (rank 0 only loads it), so the others still
    train together; before, --reuse was refused with --nproc."""
    import subprocess
    import sys

    first = write_config(tmp_path, log_file)
    assert runner.invoke(app, ["run", str(first), "--out", str(tmp_path / "first")]
                         ).exit_code == 0
    saved = tmp_path / "first" / "ease"
    second = write_config(tmp_path, log_file,
                          models=['name = "ease"\nparams = { l2 = 10.0 }', SASREC_TINY])
    out = tmp_path / "second"
    done = subprocess.run([sys.executable, "-m", "userlens.cli.main", "run", str(second),
                           "--nproc", "2", "--json", "--out", str(out), "--reuse",
                           f"ease={saved}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["model"] for r in json.loads(done.stdout)["results"]] == ["ease", "sasrec"]
    np.testing.assert_array_equal(np.load(out / "ease" / "per_user.npz")["ndcg@5"],
                                  np.load(saved / "per_user.npz")["ndcg@5"])
    assert json.loads((out / "ease" / "manifest.json").read_text())["reused_from"] == str(saved)
    assert json.loads((out / "sasrec" / "results.json").read_text())["fit_seconds"] > 0


@pytest.mark.slow
def test_a_bad_reuse_with_two_processes_is_a_clear_error(tmp_path, log_file):
    import subprocess
    import sys

    first = write_config(tmp_path, log_file)
    assert runner.invoke(app, ["run", str(first), "--out", str(tmp_path / "first")]
                         ).exit_code == 0
    second = write_config(tmp_path, log_file,
                          models=['name = "ease"\nparams = { l2 = 20.0 }', SASREC_TINY])
    done = subprocess.run([sys.executable, "-m", "userlens.cli.main", "run", str(second),
                           "--nproc", "2", "--out", str(tmp_path / "second"), "--reuse",
                           f"ease={tmp_path / 'first' / 'ease'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "params {'l2': 10.0} in the artefact, {'l2': 20.0} in this run" in message
    assert "Traceback" not in done.stderr and "Terminating process" not in done.stderr
    assert not (tmp_path / "second").exists()


CONFIGS = sorted((__import__("pathlib").Path(__file__).parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from userlens.config import load_config
    from userlens.models.registry import config_class

    config = load_config(path)
    for entry in config.models:  # hyper-parameters checked by each model's own class
        config_class(entry.name).model_validate(entry.params)


def test_reuse_evaluates_a_saved_model_with_new_metrics_without_training(tmp_path, log_file,
                                                                         monkeypatch):
    from userlens.models import EASE

    first = write_config(tmp_path, log_file)
    result = runner.invoke(app, ["run", str(first), "--out", str(tmp_path / "first")])
    assert result.exit_code == 0, result.output
    saved = tmp_path / "first" / "ease"
    before = np.load(saved / "per_user.npz")
    fit_seconds = json.loads((saved / "results.json").read_text())["fit_seconds"]

    def no_training(*args, **kwargs):
        raise AssertionError("a reused model must not be trained again")

    monkeypatch.setattr(EASE, "fit", no_training)
    second = write_config(tmp_path, log_file, models=['name = "ease"\nparams = { l2 = 10.0 }'],
                          metrics='["hr@5", "ndcg@5", "hr@10"]')
    result = runner.invoke(app, ["run", str(second), "--out", str(tmp_path / "second"),
                                 "--reuse", f"ease={saved}"])
    assert result.exit_code == 0, result.output
    assert "reused from" in result.output
    again = tmp_path / "second" / "ease"
    after = np.load(again / "per_user.npz")
    np.testing.assert_array_equal(after["users"], before["users"])
    np.testing.assert_array_equal(after["hr@5"], before["hr@5"])
    np.testing.assert_array_equal(after["ndcg@5"], before["ndcg@5"])
    assert "hr@10" in after.files and after["hr@10"].mean() >= after["hr@5"].mean()
    results = json.loads((again / "results.json").read_text())
    assert results["fit_seconds"] == fit_seconds
    assert json.loads((again / "manifest.json").read_text())["reused_from"] == str(saved)


@pytest.mark.parametrize("models, reuse, expected", [
    (['name = "ease"\nparams = { l2 = 20.0 }'], "ease={saved}",
     "params {'l2': 10.0} in the artefact, {'l2': 20.0} in this run"),
    (['name = "ease"\nparams = { l2 = 10.0 }'], "easy={saved}", "no model labelled 'easy'"),
    (['name = "ease"\nparams = { l2 = 10.0 }'], "ease", "expected LABEL=ARTEFACT"),
    (['name = "ease"\nparams = { l2 = 10.0 }'], "ease={missing}", "not a userlens artefact"),
])
def test_reuse_refuses_an_artefact_of_another_entry(tmp_path, log_file, models, reuse,
                                                     expected):
    first = write_config(tmp_path, log_file)
    assert runner.invoke(app, ["run", str(first), "--out", str(tmp_path / "first")]
                         ).exit_code == 0
    second = write_config(tmp_path, log_file, models=models)
    reuse = reuse.format(saved=tmp_path / "first" / "ease", missing=tmp_path / "nothing")
    result = runner.invoke(app, ["run", str(second), "--out", str(tmp_path / "second"),
                                 "--reuse", reuse])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert not (tmp_path / "second").exists()
