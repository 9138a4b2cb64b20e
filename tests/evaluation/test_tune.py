"""`userlens tune`: validation-only search, best config beside the study, test once."""

import json

import optuna
import pytest
from typer.testing import CliRunner

from tests.cli.test_cli import log_file, write_config  # noqa: F401 (fixture)
from userlens.cli.main import app
from userlens.config import ConfigError, load_config
from userlens.evaluation import experiment as experiment_module
from userlens.evaluation import runner as runner_module
from userlens.evaluation import tune as tune_module
from userlens.evaluation.tune import tune_experiment
from userlens.models import create
from userlens.models.registry import load_model
from userlens.pipeline import load_data, make_split

EASE_SEARCH = 'name = "ease"\nparams = { l2 = 10.0 }\n' \
              '[models.search]\nl2 = { low = 0.1, high = 1000.0, log = true }'


def test_search_uses_validation_only_and_writes_a_runnable_best_config(
        tmp_path, log_file, monkeypatch):  # noqa: F811
    config = load_config(write_config(tmp_path, log_file, models=[
        'name = "most_popular"', EASE_SEARCH]))
    stages = []
    real = runner_module.evaluate

    def recording(*args, **kwargs):
        stages.append(kwargs.get("stage", "test"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "evaluate", recording)
    monkeypatch.setattr(experiment_module, "evaluate", recording)
    summary = tune_experiment(config, tmp_path / "tune", trials=6)

    # six validation scores, then the winner run scores test once per model (2 models)
    assert stages == ["valid"] * 6 + ["test"] * 2
    study = optuna.load_study(study_name="ease",
                              storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    values = [t.value for t in study.trials]
    assert len(values) == 6 and len({round(v, 12) for v in values}) > 1
    (ease,) = summary["studies"]
    assert ease["best_valid_ndcg@10"] == max(values)
    best = load_config(tmp_path / "tune" / "best.toml")
    entry = {m.name: m for m in best.models}["ease"]
    assert entry.search == {} and entry.params["l2"] == ease["best_params"]["l2"]
    assert best.name == "toy-tuned"
    # the study's value is the validation NDCG@10 of that l2, computed independently
    dataset = load_data(config.data)
    split = make_split(dataset, config.split, config.seed)
    model = create("ease", {"l2": entry.params["l2"]}).fit(split.train)
    again = real(model, split, ["ndcg@10"], stage="valid").means()["ndcg@10"]
    assert again == pytest.approx(ease["best_valid_ndcg@10"], rel=1e-9)
    # test reported once, for the tuned model and the untouched baseline
    assert [r["model"] for r in summary["test"]["results"]] == ["most_popular", "ease"]
    assert (tmp_path / "tune" / "winner" / "ease" / "model").is_dir()


def test_epoch_models_report_their_validation_curve_to_the_study(tmp_path, log_file):  # noqa: F811
    sasrec = ('name = "sasrec"\nparams = { dim = 8, max_len = 8, max_epochs = 3, '
              'batch_size = 16, threads = 1 }\n'
              '[models.search]\nlearning_rate = { low = 1e-3, high = 1e-2, log = true }\n'
              'dropout = { choices = [0.0, 0.2] }')
    config = load_config(write_config(tmp_path, log_file, models=[sasrec]))
    tune_experiment(config, tmp_path / "tune", trials=2)
    study = optuna.load_study(study_name="sasrec",
                              storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert set(trial.params) == {"learning_rate", "dropout"}
        assert trial.params["dropout"] in (0.0, 0.2)


@pytest.mark.parametrize("search, expected", [
    ("l3 = { low = 1, high = 2 }", "search.l3 is not one of its parameters"),
    ("l2 = { low = 5, high = 1 }", "low < high"),
    ("l2 = { low = 0.0, high = 1.0, log = true }", "log-scale range needs low > 0"),
    ("l2 = { low = -5.0, high = 1.0 }", "search.l2 = -5.0 is not a valid value"),
    ("l2 = { choices = [] }", "choices"),
])
def test_bad_search_spaces_are_named(tmp_path, log_file, search, expected):  # noqa: F811
    path = write_config(tmp_path, log_file, models=[
        f'name = "ease"\n[models.search]\n{search}'])
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        load_config(path)


def test_cli_tune_json_and_nothing_to_tune(tmp_path, log_file):  # noqa: F811
    runner = CliRunner()
    plain = write_config(tmp_path, log_file)
    result = runner.invoke(app, ["tune", str(plain), "--out", str(tmp_path / "t0")])
    assert result.exit_code == 2 and "nothing to tune" in result.output
    config = write_config(tmp_path, log_file, models=[EASE_SEARCH])
    result = runner.invoke(app, ["tune", str(config), "--trials", "3", "--json",
                                 "--out", str(tmp_path / "t1")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["objective"] == "valid ndcg@10"
    assert report["studies"][0]["trials"] == 3
    assert report["test"][0]["model"] == "ease" and "ndcg@5" in report["test"][0]["metrics"]
    assert load_config(report["best_config"]).models[0].search == {}


@pytest.mark.parametrize("l2, enqueued", [(10.0, True), (5000.0, False)])
def test_the_configs_own_values_are_the_first_trial_when_inside_the_space(
        tmp_path, log_file, l2, enqueued):  # noqa: F811
    entry = EASE_SEARCH.replace("l2 = 10.0", f"l2 = {l2}")
    config = load_config(write_config(tmp_path, log_file, models=[entry]))
    summary = tune_experiment(config, tmp_path / "tune", trials=3)
    study = optuna.load_study(study_name="ease",
                              storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    first = study.trials[0].params["l2"]
    assert (first == l2) is enqueued
    assert 0.1 <= first <= 1000.0
    # the winner is at least as good on validation as the config's own setting (when tried)
    assert summary["studies"][0]["best_valid_ndcg@10"] >= study.trials[0].value
    # every trial is in the summary, as the study holds it
    log = summary["studies"][0]["trial_log"]
    assert [(t["trial"], t["value"], t["params"]) for t in log] == [
        (t.number, t.value, t.params) for t in study.trials]
    assert all(t["state"] == "complete" and t["seconds"] >= 0 for t in log)
    # a resumed study does not try the config's values again
    tune_experiment(config, tmp_path / "tune", trials=1)
    study = optuna.load_study(study_name="ease",
                              storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    assert len(study.trials) == 4 and (study.trials[3].params["l2"] == l2) is False


def _count_fits(monkeypatch) -> list[str]:
    """Record the name of every model fitted from here on."""
    real_create = create

    fits: list[str] = []

    def counting(name, params=None):
        model = real_create(name, params)
        fit = model.fit

        def recorded(*args, **kwargs):
            fits.append(name)
            return fit(*args, **kwargs)

        model.fit = recorded
        return model

    monkeypatch.setattr(experiment_module, "create", counting)  # every fit goes through it
    return fits


@pytest.mark.parametrize("retrain", [False, True])
def test_the_winning_trials_model_is_tested_unless_retrain(
        tmp_path, log_file, monkeypatch, retrain):  # noqa: F811
    config = load_config(write_config(tmp_path, log_file, models=[
        'name = "most_popular"', EASE_SEARCH]))
    fits = _count_fits(monkeypatch)
    valid_scores = []
    real = runner_module.evaluate

    def recording(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        if kwargs.get("stage") == "valid":
            valid_scores.append((model, result.means()["ndcg@10"]))
        return result

    monkeypatch.setattr(tune_module, "evaluate", recording)
    summary = tune_experiment(config, tmp_path / "tune", trials=4, retrain=retrain)
    (study,) = summary["studies"]
    # 4 trials, then most_popular, and the EASE winner again only with retrain
    assert fits == ["ease"] * 4 + ["most_popular"] + ["ease"] * retrain
    assert study["test_model"] == ("trained again with the best parameters" if retrain
                                   else f"trial {study['best_trial']}'s model")
    # the test artefact holds the model the study chose: its saved scores are the best
    # trial's model's (EASE is deterministic, so a retrained winner matches it as well)
    best_model, best_value = max(valid_scores, key=lambda pair: pair[1])
    assert best_value == study["best_valid_ndcg@10"]
    saved = load_model(tmp_path / "tune" / "winner" / "ease" / "model")
    histories = make_split(load_data(config.data), config.split, config.seed
                           ).train.histories().slice(0, 3)
    assert saved.score(histories) == pytest.approx(best_model.score(histories), rel=1e-6)


def test_a_resumed_study_retrains_a_winner_from_an_earlier_search(
        tmp_path, log_file, monkeypatch):  # noqa: F811
    config = load_config(write_config(tmp_path, log_file, models=[EASE_SEARCH]))
    tune_experiment(config, tmp_path / "tune", trials=3)
    fits = _count_fits(monkeypatch)
    summary = tune_experiment(config, tmp_path / "tune", trials=1)
    (study,) = summary["studies"]
    if study["best_trial"] < 3:  # the earlier process's model is gone: trained again
        assert fits == ["ease", "ease"]
        assert study["test_model"] == "trained again with the best parameters"
    else:
        assert fits == ["ease"] and study["test_model"] == "trial 3's model"


def test_a_study_is_resumed_only_under_the_settings_it_was_made_with(
        tmp_path, log_file):  # noqa: F811
    storage = f"sqlite:///{tmp_path / 'tune' / 'study.db'}"
    config = load_config(write_config(tmp_path, log_file, models=[EASE_SEARCH]))
    tune_experiment(config, tmp_path / "tune", trials=2)
    settings = optuna.load_study(study_name="ease", storage=storage).user_attrs[
        tune_module.STAMP_KEY]
    assert settings["fixed_params"] == {} and settings["seed"] == 0
    # the same config, a wider space and more trials: resumed
    wider = EASE_SEARCH.replace("high = 1000.0", "high = 5000.0")
    config = load_config(write_config(tmp_path, log_file, models=[wider]))
    tune_experiment(config, tmp_path / "tune", trials=1)
    assert len(optuna.load_study(study_name="ease", storage=storage).trials) == 3
    # another seed, another fixed parameter, another split or protocol: refused, study kept
    for changed, named in [
            (('seed = 0', 'seed = 1'), "seed: 0 then, 1 now"),
            (('params = { l2 = 10.0 }', 'params = { l2 = 10.0, max_items = 100 }'),
             "fixed_params"),
            (('[evaluation]', '[split]\nmethod = "temporal"\nvalid_fraction = 0.1\n'
              '[evaluation]'), "split"),
            (('[evaluation]\n', '[evaluation]\nprotocol = { repeats = "include" }\n'),
             "protocol")]:
        path = write_config(tmp_path, log_file, models=[wider])
        path.write_text(path.read_text().replace(*changed, 1))
        with pytest.raises(ConfigError, match=f"study 'ease' in .*{named}"):
            tune_experiment(load_config(path), tmp_path / "tune", trials=1)
        assert len(optuna.load_study(study_name="ease", storage=storage).trials) == 3
    # a study from before settings were recorded is not resumed either
    study = optuna.load_study(study_name="ease", storage=storage)
    optuna.storages.RDBStorage(storage).set_study_user_attr(
        study._study_id, tune_module.STAMP_KEY, None)
    with pytest.raises(ConfigError, match="no record of the settings"):
        tune_experiment(config, tmp_path / "tune", trials=1)
