"""The artefact on disk: one directory a user can copy to another machine and serve.

This module is the only owner of the layout::

    <artefact>/
      model/             model.json, config.json, arrays.npz (no pickle)
      items.json         external item ids in the model's index order (a list of strings)
      users.json         external user ids of the training data
      catalog.parquet    item metadata, when the data had any
      manifest.json      model, params, seed, data fingerprint, split, protocol, versions,
                         and the event semantics the model was trained with
      results.json       the evaluation (metrics with intervals, timings, training log)
      per_user.npz       per-user metric values, for paired tests
      item_vectors.npz   co-occurrence item vectors for profile clusters (models without
                         item embeddings)

It depends on ``models/`` and ``data/`` only: results reach it as plain data. Loading needs
no training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from userlens.data.interactions import Dataset, IdIndex
from userlens.data.semantics import EventSemantics
from userlens.models.base import Recommender, read_arrays
from userlens.models.registry import load_model

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
ITEMS = "items.json"
USERS = "users.json"
CATALOG = "catalog.parquet"
MANIFEST = "manifest.json"
RESULTS = "results.json"
PER_USER = "per_user.npz"
ITEM_VECTORS = "item_vectors.npz"
DERIVED_PREFIX = "ann-"
"""Files the service derives from the artefact (ANN index caches): not part of its version."""

DEFAULT_MAX_BYTES = 1 << 36


class ArtefactError(ValueError):
    """The directory is not a loadable artefact; the message says which file and why."""


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded in every manifest)."""
    found = {}
    for package in ("userlens", "numpy", "scipy", "polars", "implicit", "pydantic", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["python"] = platform.python_version()
    return found


def write(path: Path, model: Recommender, dataset: Dataset, *, manifest: dict[str, Any],
          semantics: EventSemantics, results: dict[str, Any] | None = None,
          per_user: dict[str, np.ndarray] | None = None,
          evaluated_users: np.ndarray | None = None,
          item_vectors: np.ndarray | None = None) -> Path:
    """Write a fitted model with its id maps, catalogue, manifest and results (and the
    co-occurrence ``item_vectors`` profiles cluster in, for models without embeddings)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL_DIR)
    dataset.users.save(path / USERS)
    dataset.items.save(path / ITEMS)
    if dataset.catalog is not None:
        dataset.catalog.frame.write_parquet(path / CATALOG)
    if per_user is not None:
        np.savez(path / PER_USER, users=evaluated_users, **per_user)
    if item_vectors is not None:
        np.savez(path / ITEM_VECTORS, vectors=np.asarray(item_vectors, np.float32))
    full = {"model": model.name, **manifest,
            "event_semantics": semantics.model_dump(),
            "versions": versions(), "created_unix": int(time.time())}
    (path / MANIFEST).write_text(json.dumps(full, indent=2))
    if results is not None:
        (path / RESULTS).write_text(json.dumps(results, indent=2))
    return path


@dataclass
class Artefact:
    """A loaded artefact: the model and everything needed to speak external ids."""

    path: Path
    model: Recommender
    items: IdIndex
    catalog: pl.DataFrame | None
    manifest: dict[str, Any]
    semantics: EventSemantics
    version: str
    item_vectors: np.ndarray | None = None
    """Co-occurrence item vectors (``item_vectors.npz``), when the artefact has them."""

    @property
    def label(self) -> str:
        return str(self.manifest.get("label") or self.path.name)

    def recommend(self, history: list[str], k: int = 10, *,
                  exclude_seen: bool = True) -> pl.DataFrame:
        """Top-k items for a history of external item ids (oldest first), as a DataFrame
        with columns ``item_id`` and ``score`` (``.to_pandas()`` for pandas). Unknown items
        in the history are skipped; an empty history gets the popularity fallback."""
        known = [str(i) for i in history if self.items.index_of(str(i)) is not None]
        window = self.model.history_window()
        histories, _ = self.items.encode_histories([known[-window:] if window else known])
        seen, _ = self.items.encode_histories([known])
        items, scores = self.model.recommend(histories, k,
                                             exclude=seen if exclude_seen else False)
        keep = np.isfinite(scores[0])
        return pl.DataFrame({"item_id": self.items.external(items[0][keep]),
                             "score": scores[0][keep].astype(np.float64)})


def version(path: Path) -> str:
    """``<label>-<hash>``: sha256 over every file of the artefact (names and contents),
    derived ANN caches excepted, so any change to what is served changes the version."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if relative.startswith(DERIVED_PREFIX) or "/." in f"/{relative}":
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    label = path.name
    manifest = _read_json(path / MANIFEST, default={})
    if isinstance(manifest, dict) and isinstance(manifest.get("label"), str):
        label = manifest["label"]
    return f"{label}-{digest.hexdigest()[:12]}"


def _read_json(file: Path, *, default: Any = None) -> Any:
    if not file.is_file():
        return default
    try:
        return json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtefactError(f"{file.name} is not valid JSON") from error


def read(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Artefact:
    """Load and check an artefact directory.

    Raises:
        ArtefactError: a missing or malformed file, arrays of the wrong shape, type or size,
            item ids that are not a list of unique strings, or an item count that differs
            between the model and ``items.json``.
    """
    path = Path(path)
    for required in (f"{MODEL_DIR}/model.json", f"{MODEL_DIR}/arrays.npz", ITEMS):
        if not (path / required).is_file():
            raise ArtefactError(f"{path}: not a userlens artefact ({required} is missing)")
    ids = _read_json(path / ITEMS)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ArtefactError(f"{path}: {ITEMS} must be a list of strings")
    try:
        items = IdIndex(ids)
        model = load_model(path / MODEL_DIR, max_bytes=max_bytes)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise ArtefactError(f"{path}: cannot load the model: {error}") from error
    if model.n_items_ != len(items):
        raise ArtefactError(f"{path}: the model has {model.n_items_} items but {ITEMS} "
                            f"lists {len(items)}")
    manifest = _read_json(path / MANIFEST, default={})
    if not isinstance(manifest, dict):
        raise ArtefactError(f"{path}: {MANIFEST} must be a JSON object")
    try:
        semantics = EventSemantics.model_validate(manifest.get("event_semantics") or {})
    except ValueError as error:
        raise ArtefactError(f"{path}: {MANIFEST} has invalid event_semantics") from error
    catalog = None
    if (path / CATALOG).is_file():
        try:
            catalog = pl.read_parquet(path / CATALOG)
        except Exception as error:  # noqa: BLE001 (polars raises several types)
            raise ArtefactError(f"{path}: {CATALOG} cannot be read") from error
        if catalog.height != len(items):
            raise ArtefactError(f"{path}: {CATALOG} has {catalog.height} rows, {ITEMS} "
                                f"{len(items)}")
    vectors = None
    if (path / ITEM_VECTORS).is_file():
        try:
            vectors = read_arrays(path / ITEM_VECTORS, {"vectors": ((len(items), None),
                                                                    "float32")},
                                  max_bytes=max_bytes)["vectors"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ArtefactError(f"{path}: {ITEM_VECTORS} cannot be read: {error}") from error
    return Artefact(path=path, model=model, items=items, catalog=catalog, manifest=manifest,
                    semantics=semantics, version=version(path), item_vectors=vectors)


def read_results(path: str | Path) -> dict:
    """The evaluation an artefact was written with (metrics, timings, training log); empty
    when it has none."""
    results = _read_json(Path(path) / RESULTS, default={})
    if not isinstance(results, dict):
        raise ArtefactError(f"{path}: {RESULTS} must be a JSON object")
    return results


def read_evaluation(path: str | Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """(manifest, per-user metric values, evaluated user indices) of an evaluated artefact."""
    path = Path(path)
    manifest = _read_json(path / MANIFEST)
    if manifest is None or not (path / PER_USER).is_file():
        raise FileNotFoundError(f"{path}: not an evaluated artefact ({MANIFEST} and "
                                f"{PER_USER} are written by `userlens run`)")
    with np.load(path / PER_USER, allow_pickle=False) as data:
        values = {key: data[key] for key in data.files if key != "users"}
        users = data["users"]
    return manifest, values, users
