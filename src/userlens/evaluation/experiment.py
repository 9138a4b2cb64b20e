"""From a validated experiment config to a leaderboard and one artefact directory per model.

The config lives in :mod:`userlens.config`, reading/filtering/splitting in
:mod:`userlens.pipeline`, the artefact layout in :mod:`userlens.artefact`; this module runs
the models and collects their results.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from userlens import artefact
from userlens.config import ExperimentConfig, ModelEntry
from userlens.data.cooccurrence import cooccurrence_vectors
from userlens.data.datasets import DEFAULT_DATA_HOME
from userlens.data.interactions import Dataset
from userlens.data.splits import Split
from userlens.evaluation.runner import EvalResult, evaluate
from userlens.models.base import Capability, Recommender
from userlens.models.registry import create
from userlens.pipeline import give_side_data, load_data, make_split

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ run


@dataclass
class ModelRun:
    label: str
    model_name: str
    fit_seconds: float
    result: EvalResult


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    mirror: Path | None = None,
    data_home: Path = DEFAULT_DATA_HOME,
    on_event: Callable[[str, dict], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    frame=None,
    fitted: dict[str, tuple[Recommender, float]] | None = None,
    reuse: dict[str, Path] | None = None,
) -> dict | None:
    """Read, filter, split, fit and evaluate every model; write artefacts; return the report.

    The run is written to a temporary directory beside ``out_dir`` and moved into place only
    when every model has finished, so a failed run never corrupts an earlier one.

    Under data-parallel training (``world_size > 1``, a torch process group already joined)
    every rank trains the models that support it together; rank 0 alone fits the others,
    evaluates and writes. Other ranks return None.

    ``fitted`` maps a model's label to a model already trained on this split with that
    entry's parameters and its fit time (``userlens tune`` passes the winning trial's model):
    it is evaluated and written as it is, not trained again.

    ``reuse`` maps a model's label to an artefact an earlier run wrote for that entry (same
    model, parameters, seed, data and split, checked): it is loaded and evaluated with this
    config's metrics, not trained again; its fit time and training log are carried over.
    """
    if rank != 0:
        on_event = None
    notify = on_event or (lambda event, payload: None)
    started = time.perf_counter()
    dataset = load_data(config.data, mirror=mirror, data_home=data_home, frame=frame)
    notify("data", {"seconds": time.perf_counter() - started, **dataset.summary()})
    split = make_split(dataset, config.split, config.seed)
    notify("split", split.summary())
    fingerprint = dataset.interactions.fingerprint()
    reused = reuse_artefacts(config, reuse or {}, fingerprint, split)
    fitted = {**(fitted or {}), **{label: (r.model, r.fit_seconds) for label, r in reused.items()}}

    if rank != 0:
        for entry in config.models:
            if entry.display in fitted:  # rank 0 does not train it, so neither does this rank
                continue
            model = create(entry.name, entry.params)
            if model.can(Capability.DISTRIBUTED):
                give_side_data(model, dataset)
                model.fit(split.train, valid=split.valid, seed=config.seed)
        return None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    runs: list[ModelRun] = []
    try:
        for entry in config.models:
            label = entry.display
            if label in fitted:
                model, fit_seconds = fitted[label]
                if label in reused:
                    notify("fit_start", {"model": label, "reused_from": str(reused[label].path)})
                notify("fit_end", {"model": label, "seconds": fit_seconds, "reused": True})
            else:
                notify("fit_start", {"model": label})
                model, fit_seconds = fit_model(
                    entry.name, entry.params, dataset, split, config.seed,
                    on_epoch=lambda record, label=label: notify(
                        "epoch", {"model": label, **record}))
                notify("fit_end", {"model": label, "seconds": fit_seconds})
            result = evaluate(
                model, split, config.evaluation.metrics, protocol=config.evaluation.protocol,
                catalog=dataset.catalog, batch_size=config.evaluation.batch_size,
                seed=config.seed,
                progress=lambda done, total, label=label: notify(
                    "eval_progress", {"model": label, "done": done, "total": total}))
            notify("eval_end", {"model": label, "seconds": result.eval_seconds,
                                "metrics": result.means()})
            runs.append(ModelRun(label, entry.name, fit_seconds, result))
            _write_artefact(tmp / label, model, dataset, config, entry, split, result,
                            fit_seconds, fingerprint, reused.get(label))
        report = build_report(config, dataset, split, runs)
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        (tmp / "config.json").write_text(config.model_dump_json(indent=2))
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out_dir, backup)
            os.replace(tmp, out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


@dataclass
class Reused:
    """A model loaded from an earlier run's artefact instead of trained again."""

    path: Path
    model: Recommender
    fit_seconds: float
    training: dict | None


def reuse_artefacts(config: ExperimentConfig, reuse: dict[str, Path], fingerprint: str,
                    split: Split) -> dict[str, Reused]:
    """Load the artefacts ``reuse`` names (label -> folder), each checked to be what this
    config's entry of that label would train: the same model and parameters, seed, data
    fingerprint and split. A mismatch is a ValueError that names the label and the field."""
    entries = {entry.display: entry for entry in config.models}
    loaded: dict[str, Reused] = {}
    for label, path in reuse.items():
        entry = entries.get(label)
        if entry is None:
            raise ValueError(f"reuse {label}={path}: {config.name} has no model labelled "
                             f"'{label}' (its labels: {', '.join(entries)})")
        saved = artefact.read(path)
        manifest = saved.manifest
        # field: (in the artefact, in this run); the split as the manifest stores it (JSON)
        fields = {"model": (manifest.get("model"), entry.name),
                  "params": (manifest.get("params"), entry.params),
                  "seed": (manifest.get("seed"), config.seed),
                  "data fingerprint": ((manifest.get("data") or {}).get("fingerprint"),
                                       fingerprint),
                  "split": (manifest.get("split"), json.loads(json.dumps(split.summary())))}
        for field, (found, expected) in fields.items():
            if found != expected:
                raise ValueError(f"reuse {label}={path}: {field} {found!r} in the artefact, "
                                 f"{expected!r} in this run; only an artefact of this entry "
                                 "on this data and split can stand in for training it")
        results = artefact.read_results(path)
        loaded[label] = Reused(Path(path), saved.model, float(results.get("fit_seconds") or 0.0),
                               results.get("training"))
    return loaded


def fit_model(name: str, params: dict, dataset: Dataset, split: Split, seed: int,
              on_epoch: Callable[[dict], None] | None = None) -> tuple[Recommender, float]:
    """Create a model, give it the dataset's side data, train it on the split's training part
    (validation for early stopping), ``on_epoch`` after each epoch; the model and seconds."""
    model = create(name, params)
    if on_epoch is not None and model.can(Capability.EPOCHS):
        model.set_epoch_callback(on_epoch)
    started = time.perf_counter()
    give_side_data(model, dataset)
    model.fit(split.train, valid=split.valid, seed=seed)
    return model, time.perf_counter() - started


def build_report(config: ExperimentConfig, dataset: Dataset, split: Split,
                 runs: list[ModelRun]) -> dict:
    protocol = config.evaluation.protocol.label()
    return {
        "name": config.name,
        "data": dataset.summary(),
        "split": split.method,
        "tie_rule": split.info.get("parameters", {}).get("tie_rule"),
        "protocol": protocol,
        "results": [{
            "model": run.label,
            "metrics": run.result.means(),
            "ci95": {k: [s.ci_low, s.ci_high] for k, s in run.result.summary.items()},
            "users": run.result.info["users"],
            "targets_dropped": run.result.info["targets_removed_as_repeats"],
            "fit_seconds": run.fit_seconds,
            "eval_seconds": run.result.eval_seconds,
        } for run in runs],
    }


def _write_artefact(path: Path, model, dataset: Dataset, config: ExperimentConfig,
                    entry: ModelEntry, split: Split, result: EvalResult, fit_seconds: float,
                    fingerprint: str, reused: Reused | None = None) -> None:
    manifest = {
        "label": entry.display,
        "params": entry.params,
        "seed": config.seed,
        "data": {"source": dataset.source, "fingerprint": fingerprint, **dataset.summary()},
        "split": split.summary(),
        "protocol": result.protocol,
        **({"reused_from": str(reused.path)} if reused is not None else {}),
    }
    results = {
        "protocol": result.protocol,
        "stage": result.stage,
        "metrics": {k: s.to_dict() for k, s in result.summary.items()},
        "fit_seconds": fit_seconds,
        "eval_seconds": result.eval_seconds,
        "info": result.info,
        "training": reused.training if reused is not None else model.training_log(),
    }
    semantics = config.data.semantics(dataset.interactions.event_types
                                      if config.data.columns.event_type else None)
    # profiles cluster a user's items in the model's embeddings; other models get vectors
    # from the training data's co-occurrence (a truncated SVD, under a second on ML-1M)
    vectors = (None if model.has_item_vectors()
               else cooccurrence_vectors(split.train, seed=config.seed))
    artefact.write(path, model, dataset, manifest=manifest, semantics=semantics,
                   results=results, per_user=result.per_user, evaluated_users=result.users,
                   item_vectors=vectors)
