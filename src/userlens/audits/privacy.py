"""``userlens audit privacy``: what the data, the models and the profiles reveal about a
user's personal attributes, and what hiding it costs.

Attackers (:mod:`userlens.audits.attacker`) read (a) the raw history (item bag), (b) every
model's user representation, (c) the profile's facets and summary text, (d) optionally
text users wrote (SynthPAI). Histories are everything before each user's test events.

Mitigations target one attribute (``[audit.privacy] mitigate``). Their users are split in
two halves: the defender learns from one (which items reveal the attribute, which
directions to remove), the attacker is cross-validated on the other, so no defence is
measured on the users it was fitted to. Utility is NDCG@10 of every model on the test
split, over all users, before and after.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer

from userlens import artefact
from userlens.audits import mitigations as mit
from userlens.audits.attacker import Attack, attack
from userlens.audits.attributes import user_labels
from userlens.audits.representations import (
    ProjectedModel,
    can_represent,
    item_item,
    project_out,
    user_representation,
)
from userlens.config import ExperimentConfig, ModelEntry
from userlens.data.interactions import Dataset, Interactions, concatenate
from userlens.data.splits import Split
from userlens.evaluation.runner import evaluate
from userlens.models.base import Capability, Recommender
from userlens.models.registry import create
from userlens.profiles.export import each_profile, population_of
from userlens.profiles.types import Measure, Profile

logger = logging.getLogger(__name__)

Notify = Callable[[str, dict], None]
UTILITY = "ndcg@10"


def joined(split: Split) -> Interactions:
    """Train and validation events: every user's history before their test events."""
    return concatenate([split.train, split.valid])


def titles(dataset: Dataset) -> list[str]:
    """A readable name per item (its title when the catalogue has one)."""
    ids = dataset.items.ids.tolist()
    if dataset.catalog is None or "title" not in dataset.catalog.frame.columns:
        return [str(i) for i in ids]
    found = dataset.catalog.frame["title"].to_list()
    return [str(t) if t else str(i) for t, i in zip(found, ids, strict=True)]


def profile_features(dataset: Dataset, events: Interactions, *, seed: int = 0
                     ) -> tuple[sp.csr_matrix, list[str]]:
    """(n_users, f) features of every user's profile: each interest's share and lift, the
    top interests, every behaviour measure, and the TF-IDF of the summary text."""
    population = population_of(dataset, events, seed=seed)
    rows: list[dict[str, float]] = [{} for _ in range(events.n_users)]
    summaries = [""] * events.n_users
    for user, row, summary in each_profile(events, dataset.items.ids, population,
                                           _profile_row, seed=seed):
        rows[user], summaries[user] = row, summary
    facets = DictVectorizer().fit(rows)
    text = TfidfVectorizer(sublinear_tf=True, min_df=2)
    words = text.fit_transform(summaries)
    features = sp.hstack([facets.transform(rows), words]).tocsr()
    names = facets.get_feature_names_out().tolist() + [
        f"summary '{w}'" for w in text.get_feature_names_out()]
    return features, names


def _profile_row(user: int, profile: Profile) -> tuple[int, dict[str, float], str]:
    """A profile's features (see :func:`profile_features`) and its summary text."""
    row = {}
    for interest in profile.interests:
        key = f"{interest.field}:{interest.value}"
        row[f"share {key}"] = interest.share
        row[f"lift {key}"] = interest.lift
    for key in profile.top_interests:
        row[f"top {key}"] = 1.0
    behaviour = profile.behaviour
    for name in type(behaviour).model_fields:
        measure = getattr(behaviour, name)
        if isinstance(measure, Measure) and measure.value is not None:
            row[f"behaviour {name}"] = float(measure.value)
    return user, row, profile.summary.text


@dataclass
class Fitted:
    entry: ModelEntry
    model: Recommender
    utility: float


def _utility(model: Recommender, split: Split, config: ExperimentConfig) -> float:
    result = evaluate(model, split, [UTILITY], protocol=config.evaluation.protocol,
                      batch_size=config.evaluation.batch_size, seed=config.seed)
    return result.summary[UTILITY].mean


def fit_models(config: ExperimentConfig, split: Split, notify: Notify, *,
               from_run: Path | None = None, dataset: Dataset | None = None) -> list[Fitted]:
    """Every model of the config with its test NDCG@10: fitted on the training split, or
    loaded from ``from_run/<label>`` (a ``userlens run`` of the same config), after
    checking that it was trained on exactly this data and split."""
    out = []
    for entry in config.models:
        started = time.perf_counter()
        if from_run is not None:
            notify("load", {"model": entry.display})
            model = trained(from_run / entry.display, dataset, split)
        else:
            notify("fit_start", {"model": entry.display})
            model = create(entry.name, entry.params).fit(split.train, valid=split.valid,
                                                          seed=config.seed)
        utility = _utility(model, split, config)
        notify("fit_end", {"model": entry.display, "seconds": time.perf_counter() - started,
                           UTILITY: utility})
        out.append(Fitted(entry, model, utility))
    return out


def trained(path: Path, dataset: Dataset | None, split: Split) -> Recommender:
    found = artefact.read(path)
    data = found.manifest.get("data", {})
    if dataset is not None and data.get("fingerprint") != dataset.interactions.fingerprint():
        raise ValueError(f"{path}: trained on other data than this config reads "
                         "(fingerprints differ); run the config again or drop --from-run")
    if found.manifest.get("split") != json.loads(json.dumps(split.summary())):
        raise ValueError(f"{path}: trained on another split than this config makes")
    return found.model


def _strongest(attacks: list[Attack]) -> dict:
    """The mitigation row's attacker numbers: the strongest classifier's value and CI."""
    best = max(attacks, key=lambda a: a.value)
    return {"value": best.value, "ci95": list(best.ci95), "metric": best.metric,
            "baseline": best.baseline, "attackers": {a.classifier: a.value for a in attacks}}


def pick_mitigated(attributes: list[str], labels: dict[str, np.ndarray],
                   wanted: str | None) -> str:
    """The attribute mitigations target: the configured one, else the first binary one."""
    if wanted is not None:
        if wanted not in labels:
            raise ValueError(f"[audit.privacy] mitigate = '{wanted}' is not among "
                             f"[audit] attributes {attributes}")
        return wanted
    for attribute in attributes:
        values = {v for v in labels[attribute] if v not in (None, "")}
        if len(values) == 2:
            return attribute
    return attributes[0]


class PrivacyAudit:
    """One run of the privacy audit (see the module docstring)."""

    def __init__(self, config: ExperimentConfig, dataset: Dataset, split: Split,
                 notify: Notify | None = None) -> None:
        self.config, self.dataset, self.split = config, dataset, split
        self.notify = notify or (lambda event, payload: None)
        self.options = config.audit.privacy
        self.folds, self.seed = config.audit.folds, config.seed
        self.labels = {a: user_labels(dataset, a) for a in config.audit.attributes}
        self.events = joined(split)
        self.bags = self.events.to_csr()
        self.histories = self.events.histories()
        self.names = titles(dataset)

    def _attack(self, features, labels, source: str, *, names=None, test_features=None,
                attribute: str, bag: bool = False) -> list[Attack]:
        out = []
        for classifier in self.options.classifiers:
            self.notify("attack", {"attribute": attribute, "source": source,
                                   "classifier": classifier})
            out.append(attack(features, labels, attribute=attribute, source=source,
                              classifier=classifier, folds=self.folds, seed=self.seed,
                              feature_names=names, test_features=test_features, bag=bag))
        return out

    def attacks(self, fitted: list[Fitted]) -> list[Attack]:
        """Every attribute against every source."""
        sources: list[tuple[str, object, list[str] | None]] = [
            ("history", self.bags, self.names)]
        for run in fitted:
            if can_represent(run.model):
                names = None if run.model.can(Capability.EMBEDDINGS) else self.names
                sources.append((f"model:{run.entry.display}",
                                user_representation(run.model, self.histories), names))
        if self.options.profile:
            self.notify("profiles", {})
            features, names = profile_features(self.dataset, self.events, seed=self.seed)
            sources.append(("profile", features, names))
        out = []
        for source, features, names in sources:
            for attribute, labels in self.labels.items():
                out += self._attack(features, labels, source, names=names,
                                    attribute=attribute, bag=source == "history")
        return out

    # ------------------------------------------------------------------ mitigations

    def mitigations(self, fitted: list[Fitted], attribute: str) -> list[dict]:
        labels = self.labels[attribute]
        rng = np.random.default_rng(self.seed)
        defender = rng.random(len(labels)) < 0.5
        hidden = np.where(defender, None, labels)  # what the attacker is scored on
        known = np.where(defender, labels, None)   # what the defender may learn from
        indicative = mit.indicative_items(self.bags, known, seed=self.seed)
        rows: list[dict] = []
        before = self._attack(self.bags, hidden, "history", attribute=attribute, bag=True)
        for run in fitted:
            rows.append(self._row("none", attribute, 0, run, run.utility, "history", before))
        for strength in self.options.obfuscation:
            train = mit.obfuscate(self.split.train, labels, strength, indicative,
                                  seed=self.seed)
            changed = Split(train, self.split.valid, self.split.test, self.split.method)
            bags = joined(changed).to_csr()
            found = self._attack(bags, hidden, "history", attribute=attribute, bag=True)
            static = attack(self.bags, hidden, attribute=attribute, source="history",
                            folds=self.folds, seed=self.seed, test_features=bags, bag=True)
            for run in fitted:
                row = self._row("obfuscation", attribute, strength, run,
                                self._changed_utility(run, changed), "history", found)
                row["value_static"] = static.value
                rows.append(row)
        for n_items in self.options.drop:
            items = mit.revealing_items(indicative, n_items)
            changed = Split(mit.drop_items(self.split.train, items),
                            mit.drop_items(self.split.valid, items), self.split.test,
                            self.split.method)
            found = self._attack(joined(changed).to_csr(), hidden, "history",
                                 attribute=attribute, bag=True)
            for run in fitted:
                rows.append(self._row("drop_items", attribute, n_items, run,
                                      self._changed_utility(run, changed), "history", found))
        for run in fitted:
            if can_represent(run.model):
                rows += self._inlp(run, attribute, labels, known, hidden)
        return rows

    def _row(self, name: str, attribute: str, strength: float, run: Fitted, utility: float,
             source: str, found: list[Attack]) -> dict:
        return {"name": name, "attribute": attribute, "strength": strength, "source": source,
                **_strongest(found), "model": run.entry.display, UTILITY: utility,
                f"{UTILITY}_before": run.utility,
                "retrained": run.entry.name in self.options.retrain}

    def _changed_utility(self, run: Fitted, changed: Split) -> float:
        """NDCG@10 with mitigated data: refitted on it (cheap models) or scoring it."""
        model = run.model
        if run.entry.name in self.options.retrain:
            model = create(run.entry.name, run.entry.params).fit(
                changed.train, valid=changed.valid, seed=self.seed)
        return _utility(model, changed, self.config)

    def _inlp(self, run: Fitted, attribute: str, labels, known, hidden) -> list[dict]:
        """Null-space projection of the model's representation, each number of rounds."""
        model = run.model
        embeddings = model.can(Capability.EMBEDDINGS)
        weights = None if embeddings else item_item(model)
        space = (model.user_vectors(self.histories) if embeddings else self.bags)
        source = f"model:{run.entry.display}"
        rows = []
        for rounds in sorted({0, *self.options.inlp}):  # 0: the representation as it is
            self.notify("inlp", {"model": run.entry.display, "rounds": rounds})
            basis = mit.inlp(space, known, rounds, seed=self.seed)
            projected = project_out(space, basis)
            shown = projected if embeddings else projected @ weights
            found = self._attack(shown, hidden, source, attribute=attribute)
            utility = _utility(ProjectedModel(model, basis), self.split, self.config)
            row = self._row("inlp", attribute, rounds, run, utility, source, found)
            row["retrained"] = False
            rows.append(row)
        return rows


def run_privacy(config: ExperimentConfig, dataset: Dataset, split: Split, *,
                notify: Notify | None = None, client_factory=None,
                from_run: Path | None = None) -> dict:
    """The privacy audit's report (the ``--json`` object)."""
    notify = notify or (lambda event, payload: None)
    started = time.perf_counter()
    audit = PrivacyAudit(config, dataset, split, notify)
    fitted = fit_models(config, split, notify, from_run=from_run, dataset=dataset)
    attacks = audit.attacks(fitted)
    attribute = pick_mitigated(config.audit.attributes, audit.labels, config.audit.privacy.mitigate)
    mitigations = audit.mitigations(fitted, attribute)
    text = config.audit.privacy.text
    if text is not None:
        attacks += text_attacks(config, notify, client_factory)
    return {"name": config.name, "data": dataset.summary(), "split": split.method,
            "attacks": [a.to_dict() for a in attacks], "mitigations": mitigations,
            "mitigated_attribute": attribute,
            "models": [{"model": f.entry.display, UTILITY: f.utility} for f in fitted],
            "seconds": time.perf_counter() - started}


def text_attacks(config: ExperimentConfig, notify: Notify, client_factory=None) -> list[Attack]:
    """TF-IDF (and, with ``llm_users``, language-model) attacks on SynthPAI text."""
    from userlens.audits.text import llm_attacks, read_synthpai, tfidf_attacks

    options = config.audit.privacy.text
    authors = read_synthpai(options.path, options.attributes)
    notify("text", {"authors": len(authors.ids)})
    out = tfidf_attacks(authors, classifiers=config.audit.privacy.classifiers,
                        folds=config.audit.folds, seed=config.seed)
    if options.llm_users:
        from userlens.llm import connect

        client = client_factory() if client_factory is not None else connect(config.llm)
        out += llm_attacks(authors, client, attributes=options.llm_attributes,
                           n_users=options.llm_users, max_chars=options.max_chars,
                           seed=config.seed,
                           progress=lambda done, total: notify(
                               "llm_progress", {"done": done, "total": total}))
    return out
