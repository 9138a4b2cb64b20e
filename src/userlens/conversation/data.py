"""Conversational recommendation data: user-item pairs and the item-attribute graph.

The published EAR / SCPR releases (``crs-lastfm-ear``: LastFM with 33 coarse attributes;
``crs-lastfm-star``: LastFM* with 8,438 attributes and friendships) are folders of JSON:
``review_dict_{train,valid,test}.json`` (user -> items, the published split, kept as is),
``item_dict.json`` (item -> ``feature_index``, the attribute ids) and a tag map from the
original hetrec2011 tag ids to attribute ids (``tag_map.json`` for EAR,
``original_tag_map.json`` for SCPR). Attribute names are read from hetrec2011's
``tags.dat`` when one is found beside the data (or given); otherwise an attribute is named
by its original tag id (``tag 73``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

SPLITS = ("train", "valid", "test")

# registered conversational datasets: name -> folder in a shared/data mirror
DATASETS = {"crs-lastfm-ear": "crs-lastfm-ear", "crs-lastfm-star": "crs-lastfm-star-scpr"}


class CRSDataError(ValueError):
    """A conversational dataset folder is missing a file or holds inconsistent ids."""


@dataclass(frozen=True)
class CRSData:
    """The item-attribute graph and the published split, as contiguous ints.

    ``item_attributes`` is a binary (n_items, n_attributes) CSR matrix; ``pairs[split]`` an
    (n, 2) array of (user, item) rows in the file's order; ``train`` the (n_users, n_items)
    binary CSR matrix of training pairs; ``friends`` a CSR adjacency (LastFM* only).
    """

    name: str
    n_users: int
    n_items: int
    item_attributes: sparse.csr_matrix
    attribute_names: list[str]
    pairs: dict[str, np.ndarray]
    friends: sparse.csr_matrix | None = None

    @property
    def n_attributes(self) -> int:
        return self.item_attributes.shape[1]

    @property
    def train(self) -> sparse.csr_matrix:
        pairs = self.pairs["train"]
        matrix = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                                   shape=(self.n_users, self.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def attributes_of(self, item: int) -> np.ndarray:
        start, end = self.item_attributes.indptr[item:item + 2]
        return self.item_attributes.indices[start:end]

    def summary(self) -> dict:
        return {"name": self.name, "users": self.n_users, "items": self.n_items,
                "attributes": self.n_attributes,
                "attributes_per_item": round(float(self.item_attributes.getnnz(axis=1).mean()), 2),
                **{f"{s}_pairs": int(len(self.pairs[s])) for s in SPLITS}}


def _load_json(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise CRSDataError(f"{folder}: no {name} (a conversational dataset folder holds "
                           "review_dict_{train,valid,test}.json, item_dict.json and a tag map)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CRSDataError(f"{path}: not valid JSON ({error})") from None


def _pairs(folder: Path, split: str, n_users: int, n_items: int) -> np.ndarray:
    reviews = _load_json(folder, f"review_dict_{split}.json")
    rows = [(int(u), int(i)) for u, items in reviews.items() for i in items]
    pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    bad = np.flatnonzero((pairs[:, 0] >= n_users) | (pairs[:, 1] >= n_items) | (pairs < 0).any(1))
    if len(bad):
        u, i = pairs[bad[0]]
        raise CRSDataError(f"{folder}/review_dict_{split}.json: user {u} item {i} outside the "
                           f"{n_users} users / {n_items} items of item_dict.json")
    return pairs


def read_tag_names(path: Path) -> dict[int, str]:
    """hetrec2011's ``tags.dat`` (``tagID<TAB>tagValue`` lines, a header, Latin-1)."""
    names = {}
    for line in path.read_text(encoding="latin-1").splitlines()[1:]:
        tag, _, value = line.partition("\t")
        if tag.strip().isdigit():
            names[int(tag)] = value.strip()
    return names


def load_crs(folder: str | Path, *, name: str | None = None,
             tag_names: str | Path | None = None) -> CRSData:
    """Read an EAR / SCPR data folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CRSDataError(f"{folder}: no such folder")
    item_dict = _load_json(folder, "item_dict.json")
    n_items = max(int(k) for k in item_dict) + 1
    tag_file = "tag_map.json" if (folder / "tag_map.json").is_file() else "original_tag_map.json"
    tag_map = {int(k): int(v) for k, v in _load_json(folder, tag_file).items()}
    n_attributes = max(tag_map.values()) + 1
    rows, cols = [], []
    for key, entry in item_dict.items():
        features = entry.get("feature_index")
        if not isinstance(features, list):
            raise CRSDataError(f"{folder}/item_dict.json: item {key} has no feature_index list")
        for feature in features:
            if not 0 <= int(feature) < n_attributes:
                raise CRSDataError(f"{folder}/item_dict.json: item {key} names attribute "
                                   f"{feature}, outside the {n_attributes} of {tag_file}")
            rows.append(int(key))
            cols.append(int(feature))
    item_attributes = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, n_attributes))
    item_attributes.sum_duplicates()
    item_attributes.data[:] = 1.0
    users: set[int] = set()
    for split in SPLITS:
        users |= {int(u) for u in _load_json(folder, f"review_dict_{split}.json")}
    friends = None
    if (folder / "user_dict.json").is_file():
        user_dict = _load_json(folder, "user_dict.json")
        users |= {int(u) for u in user_dict}
    n_users = max(users) + 1
    pairs = {split: _pairs(folder, split, n_users, n_items) for split in SPLITS}
    if (folder / "user_dict.json").is_file():
        links = [(int(u), int(f)) for u, entry in user_dict.items()
                 for f in entry.get("friends", []) if int(f) < n_users]
        links_arr = np.asarray(links, dtype=np.int64).reshape(-1, 2)
        friends = sparse.csr_matrix((np.ones(len(links_arr), np.float32),
                                     (links_arr[:, 0], links_arr[:, 1])), shape=(n_users, n_users))
    names_by_tag: dict[int, str] = {}
    for candidate in ([Path(tag_names)] if tag_names else
                      [folder / "tags.dat", folder.parent / "lastfm-hetrec2011-2k" / "tags.dat"]):
        if candidate.is_file():
            names_by_tag = read_tag_names(candidate)
            break
    attribute_names = [""] * n_attributes
    for tag, attribute in tag_map.items():
        attribute_names[attribute] = names_by_tag.get(tag, f"tag {tag}")
    return CRSData(name or folder.name, n_users, n_items, item_attributes, attribute_names,
                   pairs, friends)


def resolve_crs(dataset: str, mirror: Path | None) -> Path:
    """The folder of a registered conversational dataset inside a ``shared/data`` mirror."""
    if dataset not in DATASETS:
        raise KeyError(f"unknown conversational dataset '{dataset}'; known: "
                       f"{', '.join(DATASETS)} (or give data.path, a folder in their format)")
    if mirror is None or not (mirror / DATASETS[dataset]).is_dir():
        raise FileNotFoundError(f"conversational dataset '{dataset}' needs a shared/data "
                                f"mirror holding {DATASETS[dataset]}/ (set "
                                "USERLENS_DATA_MIRROR)")
    return mirror / DATASETS[dataset]
