"""From a validated TOML config to a leaderboard and one artefact directory per model."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from userlens.data import filters
from userlens.data.datasets import DEFAULT_DATA_HOME, resolve
from userlens.data.interactions import Dataset
from userlens.data.readers import ColumnMap, read
from userlens.data.splits import Split, leave_one_out, temporal, user_holdout
from userlens.evaluation.metrics import parse_metric
from userlens.evaluation.runner import EvalResult, Protocol, evaluate
from userlens.models.registry import MODEL_NAMES, config_class, create

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The config file is invalid; the message names the offending key."""


class ColumnsConfig(BaseModel, frozen=True, extra="forbid"):
    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"
    value: str | None = None
    event_type: str | None = None


class DataConfig(BaseModel, frozen=True, extra="forbid"):
    path: str | None = None
    dataset: str | None = None
    format: Literal["csv", "tsv", "parquet", "jsonl", "movielens", "recbole", "sequences",
                    "amazon"] | None = None
    columns: ColumnsConfig = ColumnsConfig()
    separator: str | None = None
    min_rating: float | None = None
    """Keep events with value >= min_rating (explicit ratings -> implicit positives)."""
    repeats: Literal["all", "first", "last"] = "all"
    event_weights: dict[str, float] = {}
    negative_event_types: list[str] = []
    min_user_interactions: int = Field(default=0, ge=0)
    min_item_interactions: int = Field(default=0, ge=0)
    iterative_k_core: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of data.path or data.dataset")
        return self


class SplitConfig(BaseModel, frozen=True, extra="forbid"):
    method: Literal["leave_one_out", "temporal", "user_holdout"] = "leave_one_out"
    validation: bool = True
    cut: int | None = None
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    valid_fraction: float = Field(default=0.0, ge=0, lt=1)
    cold_users: Literal["drop", "keep"] = "drop"
    cold_items: Literal["drop", "keep"] = "drop"


class EvaluationConfig(BaseModel, frozen=True, extra="forbid"):
    metrics: list[str] = ["hr@10", "ndcg@10"]
    protocol: Protocol = Protocol()
    batch_size: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _known_metrics(self) -> EvaluationConfig:
        for metric in self.metrics:
            parse_metric(metric)
        return self


class ModelEntry(BaseModel, frozen=True, extra="forbid"):
    name: str
    label: str | None = None
    """Name in the leaderboard and artefact folder (default: the model name)."""
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_model(self) -> ModelEntry:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"unknown model '{self.name}'; known models: "
                             f"{', '.join(MODEL_NAMES)}")
        try:
            config_class(self.name)(**self.params)
        except ValidationError as error:
            problems = "; ".join(f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in error.errors())
            raise ValueError(f"model '{self.name}': {problems}") from None
        return self


class ExperimentConfig(BaseModel, frozen=True, extra="forbid"):
    name: str
    seed: int = 0
    data: DataConfig
    split: SplitConfig = SplitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    models: list[ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentConfig:
        labels = [m.label or m.name for m in self.models]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"models {duplicated} appear twice; give each a distinct 'label'")
        return self


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate a TOML experiment config; errors name the bad key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for e in error.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown key (typo?)"
            problems.append(f"{key}: {message}")
        raise ConfigError(f"{path}: invalid config\n  " + "\n  ".join(problems)) from None


# ------------------------------------------------------------------ data


def load_data(config: DataConfig, *, base_dir: Path | None = None,
              mirror: Path | None = None, data_home: Path = DEFAULT_DATA_HOME) -> Dataset:
    """Read and filter the data a config describes."""
    if config.dataset is not None:
        path, data_format = resolve(config.dataset, mirror=mirror, data_home=data_home)
    else:
        path = Path(config.path)
        if not path.is_absolute() and not path.exists() and base_dir is not None:
            path = base_dir / path
        data_format = config.format
    columns = ColumnMap(**config.columns.model_dump())
    dataset = read(path, data_format, columns, separator=config.separator)
    if config.min_rating is not None:
        dataset = filters.min_value(dataset, config.min_rating)
    if config.event_weights or config.negative_event_types:
        dataset = filters.event_weights(dataset, config.event_weights,
                                        tuple(config.negative_event_types))
    dataset = filters.repeats(dataset, config.repeats)
    if config.min_user_interactions or config.min_item_interactions:
        dataset = filters.k_core(dataset, config.min_user_interactions,
                                 config.min_item_interactions,
                                 iterative=config.iterative_k_core)
    return dataset


def make_split(dataset: Dataset, config: SplitConfig, seed: int) -> Split:
    events = dataset.interactions
    if config.method == "leave_one_out":
        return leave_one_out(events, validation=config.validation)
    if config.method == "temporal":
        return temporal(events, cut=config.cut, test_fraction=config.test_fraction,
                        valid_fraction=config.valid_fraction, cold_users=config.cold_users,
                        cold_items=config.cold_items)
    return user_holdout(events, test_fraction=config.test_fraction,
                        valid_fraction=config.valid_fraction, seed=seed)


# ------------------------------------------------------------------ run


@dataclass
class ModelRun:
    label: str
    model_name: str
    fit_seconds: float
    result: EvalResult


def versions() -> dict[str, str]:
    packages = ["userlens", "numpy", "scipy", "polars", "implicit", "pydantic"]
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["python"] = platform.python_version()
    return found


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    base_dir: Path | None = None,
    mirror: Path | None = None,
    data_home: Path = DEFAULT_DATA_HOME,
    on_event: Callable[[str, dict], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict | None:
    """Read, filter, split, fit and evaluate every model; write artefacts; return the report.

    The run is written to a temporary directory beside ``out_dir`` and moved into place only
    when every model has finished, so a failed run never corrupts an earlier one.

    Under data-parallel training (``world_size > 1``, a torch process group already joined)
    every rank trains the models that support it together; rank 0 alone fits the others,
    evaluates and writes. Other ranks return None.
    """
    if rank != 0:
        on_event = None
    notify = on_event or (lambda event, payload: None)
    started = time.perf_counter()
    dataset = load_data(config.data, base_dir=base_dir, mirror=mirror, data_home=data_home)
    notify("data", {"seconds": time.perf_counter() - started, **dataset.summary()})
    split = make_split(dataset, config.split, config.seed)
    notify("split", split.summary())
    fingerprint = dataset.interactions.fingerprint()

    if rank != 0:
        for entry in config.models:
            model = create(entry.name, entry.params)
            if getattr(model, "distributed", False):
                model.fit(split.train, valid=split.valid, seed=config.seed)
        return None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    runs: list[ModelRun] = []
    try:
        for entry in config.models:
            label = entry.label or entry.name
            notify("fit_start", {"model": label})
            model = create(entry.name, entry.params)
            if hasattr(model, "on_epoch"):
                model.on_epoch = lambda record, label=label: notify(
                    "epoch", {"model": label, **record})
            fit_started = time.perf_counter()
            model.fit(split.train, valid=split.valid, seed=config.seed)
            fit_seconds = time.perf_counter() - fit_started
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
                            fit_seconds, fingerprint)
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


def build_report(config: ExperimentConfig, dataset: Dataset, split: Split,
                 runs: list[ModelRun]) -> dict:
    protocol = config.evaluation.protocol.label()
    return {
        "name": config.name,
        "data": dataset.summary(),
        "split": split.method,
        "protocol": protocol,
        "results": [{
            "model": run.label,
            "metrics": run.result.means(),
            "ci95": {k: [s.ci_low, s.ci_high] for k, s in run.result.summary.items()},
            "fit_seconds": run.fit_seconds,
            "eval_seconds": run.result.eval_seconds,
        } for run in runs],
    }


def _write_artefact(path: Path, model, dataset: Dataset, config: ExperimentConfig,
                    entry: ModelEntry, split: Split, result: EvalResult, fit_seconds: float,
                    fingerprint: str) -> None:
    model.save(path / "model")
    dataset.users.save(path / "users.json")
    dataset.items.save(path / "items.json")
    if dataset.catalog is not None:
        dataset.catalog.frame.write_parquet(path / "catalog.parquet")
    np.savez(path / "per_user.npz", users=result.users, **result.per_user)
    manifest = {
        "model": entry.name,
        "label": entry.label or entry.name,
        "params": entry.params,
        "seed": config.seed,
        "data": {"source": dataset.source, "fingerprint": fingerprint, **dataset.summary()},
        "split": split.summary(),
        "protocol": result.protocol,
        "versions": versions(),
        "created_unix": int(time.time()),
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    results = {
        "protocol": result.protocol,
        "stage": result.stage,
        "metrics": {k: s.to_dict() for k, s in result.summary.items()},
        "fit_seconds": fit_seconds,
        "eval_seconds": result.eval_seconds,
        "info": result.info,
        "training": getattr(model, "training_", None),
    }
    (path / "results.json").write_text(json.dumps(results, indent=2))
