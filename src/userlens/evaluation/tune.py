"""Hyper-parameter search on the validation split only (``userlens tune``).

Each ``[[models]]`` entry with a ``[models.search]`` table gets an Optuna study (TPE sampler
seeded by the config's seed, median pruning on the validation curve of models trained in
epochs). A trial trains on the training split and is scored by NDCG@10 on the validation
split; the test split is never scored during the search. The best parameters are written as
a runnable config beside the study (``best.toml``, ``study.db``), and the winners, with the
config's untuned models trained beside them, are evaluated on the test split once, as
``userlens run`` would (``winner/``). A winner is the winning trial's own model (the model
selected on validation, not a second training with its parameters); ``retrain`` trains it
again instead, as does a resumed study whose winner came from an earlier process. When the
config gives a value for every searched parameter, inside its space, a new study's first
trial is those values. A study records what its trial values depend on (data, split, seed,
protocol, the model's fixed parameters, the validation curve's scale) and is resumed only
under the same; its search space and budget may change between runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userlens.config import ConfigError, ExperimentConfig, ModelEntry, SearchRange
from userlens.data.datasets import DEFAULT_DATA_HOME
from userlens.data.interactions import Dataset
from userlens.data.splits import Split
from userlens.evaluation.experiment import fit_model, run_experiment
from userlens.evaluation.runner import evaluate
from userlens.models.base import Capability, Recommender
from userlens.models.sequential_config import valid_value
from userlens.pipeline import load_data, make_split

logger = logging.getLogger(__name__)

OBJECTIVE = "ndcg@10"
CURVE = "valid ndcg, users as evaluation counts them"
"""The scale of the validation curve the pruner compares trials on. Change it whenever the
curve's values change meaning, so a study holding the old values is not resumed."""
STAMP_KEY = "userlens_settings"


@dataclass
class _Kept:
    """The best trial's trained model so far in this process (one per searched model)."""

    trial: int = -1
    value: float = float("-inf")
    model: Recommender | None = None
    fit_seconds: float = 0.0


def suggest(trial: Any, key: str, space: SearchRange) -> Any:
    """Draw one value of ``space`` for an Optuna trial."""
    if space.choices is not None:
        return trial.suggest_categorical(key, space.choices)
    if space.integer:
        return trial.suggest_int(key, space.low, space.high, step=space.step or 1,
                                 log=space.log)
    return trial.suggest_float(key, float(space.low), float(space.high), step=space.step,
                               log=space.log)


def tune_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    trials: int,
    time_limit: float | None = None,
    mirror: Path | None = None,
    data_home: Path = DEFAULT_DATA_HOME,
    on_event: Callable[[str, dict], None] | None = None,
    retrain: bool = False,
) -> dict:
    """Search every model's ``search`` space on validation, write ``best.toml`` and the study
    to ``out_dir``, then report test once for the winners (the winning trial's model, or
    trained again with ``retrain``). ``time_limit`` (seconds) bounds each model's search; a
    trial running at the limit finishes."""
    import optuna
    import tomli_w

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    notify = on_event or (lambda event, payload: None)
    searched = [entry for entry in config.models if entry.search]
    if not searched:
        raise ConfigError(f"{config.name}: nothing to tune; give a model a [models.search] "
                          "table, e.g. learning_rate = { low = 1e-4, high = 1e-2, log = true }")
    dataset = load_data(config.data, mirror=mirror, data_home=data_home)
    split = make_split(dataset, config.split, config.seed)
    if split.valid is None or not len(split.valid):
        raise ConfigError(f"{config.name}: tuning selects on the validation split; this "
                          "split has none (set [split] validation = true)")
    notify("data", dataset.summary())
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    chosen: dict[str, ModelEntry] = {}
    fitted: dict[str, tuple[Recommender, float]] = {}
    studies = []
    for entry in searched:
        winner, study, kept = _search(entry, config, dataset, split, storage, trials,
                                      time_limit, notify)
        chosen[entry.display] = winner
        reuse = not retrain and kept.model is not None and kept.trial == study["best_trial"]
        if reuse:
            if kept.model.can(Capability.EPOCHS):
                kept.model.set_epoch_callback(None)
            fitted[entry.display] = (kept.model, kept.fit_seconds)
        study["test_model"] = (f"trial {kept.trial}'s model" if reuse
                               else "trained again with the best parameters")
        studies.append(study)
    tuned = config.model_copy(update={
        "name": f"{config.name}-tuned",
        "models": [chosen.get(entry.display, entry) for entry in config.models]})
    best_path = out_dir / "best.toml"
    best_path.write_text(
        f"# written by `userlens tune` from {config.name}: the best validation "
        f"{OBJECTIVE} of each searched model\n"
        + tomli_w.dumps(tuned.model_dump(mode="json", exclude_none=True,
                                         exclude_defaults=True)))
    notify("test", {"config": str(best_path)})
    report = run_experiment(tuned, out_dir / "winner", mirror=mirror, data_home=data_home,
                            on_event=on_event, fitted=fitted)
    summary = {"name": config.name, "objective": f"valid {OBJECTIVE}", "studies": studies,
               "best_config": str(best_path), "test": report}
    (out_dir / "tune.json").write_text(json.dumps(summary, indent=2))
    return summary


def _search(entry: ModelEntry, config: ExperimentConfig, dataset: Dataset, split: Split,
            storage: str, trials: int, time_limit: float | None,
            notify: Callable[[str, dict], None]) -> tuple[ModelEntry, dict, _Kept]:
    """One model's study: the winning entry (its search spent), the study's summary and the
    best model trained in this process."""
    import optuna

    started = time.perf_counter()
    study = optuna.create_study(
        study_name=entry.display, storage=storage, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4),
        load_if_exists=True)
    _stamp_or_check(study, _settings(entry, config, dataset, split), storage)
    own = {key: entry.params[key] for key, space in entry.search.items()
           if key in entry.params and space.contains(entry.params[key])}
    if not study.trials and len(own) == len(entry.search):
        # the config's own values are the first trial: the search starts from the
        # setting it is meant to improve, and the winner is never worse on validation
        study.enqueue_trial(own)

    def finished(study: Any, trial: Any) -> None:
        notify("trial_end", {"model": entry.display, "trial": trial.number,
                             "state": trial.state.name, "value": trial.value,
                             "params": trial.params})

    kept = _Kept()
    study.optimize(_objective(entry, config, dataset, split, notify, kept), n_trials=trials,
                   timeout=time_limit, callbacks=[finished], catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"{entry.display}: no trial completed (all pruned or failed)")
    best = study.best_trial
    winner = entry.model_copy(update={"params": {**entry.params, **best.params}, "search": {}})
    return winner, {
        "model": entry.display, "trials": len(study.trials), "completed": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "seconds": time.perf_counter() - started, "best_trial": best.number,
        f"best_valid_{OBJECTIVE}": best.value, "best_params": best.params,
        "space": {k: v.model_dump(exclude_none=True) for k, v in entry.search.items()},
        "trial_log": [_trial_record(t) for t in study.trials],
    }, kept


def _settings(entry: ModelEntry, config: ExperimentConfig, dataset: Dataset, split: Split
              ) -> dict:
    """What a trial's value depends on besides the drawn parameters (JSON only)."""
    fixed = {key: value for key, value in entry.params.items() if key not in entry.search}
    return {"model": entry.name, "fixed_params": fixed,
            "data": dataset.interactions.fingerprint(),
            "split": split.info["parameters"], "seed": config.seed,
            "protocol": config.evaluation.protocol.model_dump(mode="json"),
            "objective": f"valid {OBJECTIVE}", "curve": CURVE}


def _stamp_or_check(study: Any, settings: dict, storage: str) -> None:
    """Record ``settings`` on a new study; refuse to add trials to one made under others,
    whose values (and pruning curves) would not compare with the new trials'."""
    where = f"study {study.study_name!r} in {storage.removeprefix('sqlite:///')}"
    if not study.trials:
        study.set_user_attr(STAMP_KEY, settings)
        return
    recorded = study.user_attrs.get(STAMP_KEY)
    if recorded is None:
        raise ConfigError(f"{where} has {len(study.trials)} trials but no record of the "
                          "settings they ran under (written by an older userlens); its "
                          "values may not compare with new ones: give tune another --out")
    differ = sorted(key for key in set(recorded) | set(settings)
                    if recorded.get(key) != settings.get(key))
    if differ:
        changes = "; ".join(f"{key}: {recorded.get(key)!r} then, {settings.get(key)!r} now"
                            for key in differ)
        raise ConfigError(f"{where} was run under other settings ({changes}); its "
                          f"{len(study.trials)} trials would not compare with new ones: "
                          "resume it with the config it was made with, or give tune "
                          "another --out")


def _trial_record(trial: Any) -> dict:
    """One trial for the summary: number, state, validation value, parameters, seconds."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if (
        trial.datetime_complete and trial.datetime_start) else None
    return {"trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            "params": trial.params, "seconds": seconds}


def _objective(entry: ModelEntry, config: ExperimentConfig, dataset: Dataset, split: Split,
               notify: Callable[[str, dict], None], kept: _Kept) -> Callable[[Any], float]:
    """A trial: draw the parameters, train on the training split (pruned on the validation
    curve where the model trains in epochs), score validation NDCG@10. Never the test. The
    best model so far is kept in ``kept`` (one model at a time)."""
    import optuna

    def objective(trial: Any) -> float:
        drawn = {key: suggest(trial, key, space) for key, space in entry.search.items()}
        notify("trial_start", {"model": entry.display, "trial": trial.number, "params": drawn})

        def report(record: dict) -> None:
            notify("epoch", {"model": entry.display, "trial": trial.number, **record})
            value = valid_value(record)
            if value is not None:
                trial.report(value, record["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        model, fit_seconds = fit_model(entry.name, {**entry.params, **drawn}, dataset, split,
                                       config.seed, on_epoch=report)
        result = evaluate(model, split, [OBJECTIVE], stage="valid",
                          protocol=config.evaluation.protocol, catalog=dataset.catalog,
                          batch_size=config.evaluation.batch_size, seed=config.seed)
        value = result.means()[OBJECTIVE]
        if value > kept.value:  # Optuna's best_trial keeps the first of equal values too
            kept.trial, kept.value, kept.model, kept.fit_seconds = (
                trial.number, value, model, fit_seconds)
        return value

    return objective
