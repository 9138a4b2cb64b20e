"""Personal attributes inferred from what users wrote (SynthPAI: Yukhymenko et al., 2024).

Two attackers: a TF-IDF + classifier baseline (cross-validated like every attacker of the
privacy audit) and a language model prompted per attribute through the OpenAI-compatible
client (Staab et al., "Beyond Memorization", ICLR 2024), the embedded SmolLM2 by default.
Labels are the profiles' ground truth, put into comparable groups: age in the MovieLens age
groups, places as their country, education as its level.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from userlens.audits.attacker import Attack, attack
from userlens.audits.attributes import AGE_EDGES

logger = logging.getLogger(__name__)

PROFILES_FILE = "user_bot_profiles_300.json"
COMMENTS_FILE = "comments_label_eval.jsonl"

EDUCATION = [("phd", "doctorate"), ("doctor", "doctorate"), ("master", "masters"),
             ("mba", "masters"), ("bachelor", "bachelors"), ("college", "some college"),
             ("associate", "some college"), ("diploma", "high school"),
             ("high school", "high school")]


@dataclass
class Authors:
    """One row per author: their comments joined, and their attributes' labels."""

    ids: list[str]
    texts: list[str]
    labels: dict[str, np.ndarray]


def _age(value) -> str | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return next((name for edge, name in AGE_EDGES if age < edge), "56+")


def _country(value) -> str | None:
    if not value:
        return None
    return str(value).split(",")[-1].strip().lower() or None


def _education(value) -> str | None:
    if not value:
        return None
    text = str(value).lower()
    return next((level for key, level in EDUCATION if key in text), "other")


def _plain(value) -> str | None:
    if value in (None, ""):
        return None
    return str(value).strip().lower() or None


NORMALISE: dict[str, Callable] = {"age": _age, "city_country": _country,
                                  "birth_city_country": _country, "education": _education}


def read_synthpai(folder: str | Path, attributes: list[str]) -> Authors:
    """SynthPAI's comments per author, and the authors' labelled attributes.

    Raises:
        FileNotFoundError: a file of the data set is missing (the message names it).
        ValueError: an attribute SynthPAI does not label.
    """
    folder = Path(folder)
    for name in (PROFILES_FILE, COMMENTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: not found (a SynthPAI folder holds "
                                    f"{PROFILES_FILE} and {COMMENTS_FILE})")
    profiles = json.loads((folder / PROFILES_FILE).read_text())
    known = sorted({key for p in profiles.values() for key in p})
    missing = [a for a in attributes if a not in known]
    if missing:
        raise ValueError(f"SynthPAI labels {known}; not {missing}")
    texts: dict[str, list[str]] = {}
    with (folder / COMMENTS_FILE).open() as handle:
        for line in handle:
            row = json.loads(line)
            texts.setdefault(row["author"], []).extend(c["text"] for c in row["comments"])
    ids = sorted(texts, key=lambda a: int(re.sub(r"\D", "", a) or 0))
    labels = {a: np.array([NORMALISE.get(a, _plain)(profiles.get(i, {}).get(a)) for i in ids],
                          dtype=object) for a in attributes}
    return Authors(ids, ["\n".join(texts[i]) for i in ids], labels)


def tfidf_attacks(authors: Authors, *, classifiers: list[str], folds: int, seed: int
                  ) -> list[Attack]:
    """Cross-validated TF-IDF attackers, one per attribute and classifier."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2),
                                 max_features=50_000)
    features = vectorizer.fit_transform(authors.texts)
    names = vectorizer.get_feature_names_out().tolist()
    out = []
    for attribute, labels in authors.labels.items():
        for classifier in classifiers:
            out.append(attack(features, labels, attribute=attribute, source="text:tfidf",
                              classifier=classifier, folds=folds, seed=seed,
                              feature_names=names))
    return out


def _choices(labels: np.ndarray) -> list[str]:
    return sorted({str(v) for v in labels if v not in (None, "")})


def prompt(text: str, attribute: str, choices: list[str], max_chars: int) -> list[dict]:
    """The per-attribute question, with the closed set of answers to pick from."""
    readable = attribute.replace("_", " ")
    return [
        {"role": "system", "content": "You read online comments and guess facts about their "
                                      "author. Answer with exactly one option from the list."},
        {"role": "user", "content": f"Comments by one author:\n{text[:max_chars]}\n\n"
                                    f"What is the author's {readable}? Options: "
                                    f"{'; '.join(choices)}.\nAnswer with one option only."}]


def parse_choice(answer: str, choices: list[str]) -> str | None:
    """The option an answer names (the longest one found, so "very high" beats "high")."""
    text = answer.lower()
    found = [c for c in choices if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", text)]
    return max(found, key=len) if found else None


def llm_attacks(authors: Authors, client, *, attributes: list[str], n_users: int,
                max_chars: int, seed: int,
                progress: Callable[[int, int], None] | None = None) -> list[Attack]:
    """Accuracy of the language model's guess per attribute over ``n_users`` authors (a
    seeded sample), against the majority class among those authors; an answer naming no
    option counts as wrong (the count is in ``revealing``)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(authors.ids), size=min(n_users, len(authors.ids)),
                              replace=False))
    out = []
    total, done = len(attributes) * len(rows), 0
    for attribute in attributes:
        labels = authors.labels[attribute]
        choices = _choices(labels)
        correct, unparsed, truth = [], 0, []
        for row in rows:
            if labels[row] in (None, ""):
                continue
            answer = client.complete(prompt(authors.texts[row], attribute, choices, max_chars),
                                     max_tokens=12, seed=seed)
            guess = parse_choice(answer, choices)
            unparsed += guess is None
            correct.append(guess == labels[row])
            truth.append(labels[row])
            done += 1
            if progress:
                progress(done, total)
        hits = np.asarray(correct, dtype=np.float64)
        boot = hits[rng.integers(0, len(hits), size=(1000, len(hits)))].mean(axis=1)
        _, counts = np.unique(np.asarray(truth, dtype=str), return_counts=True)
        low, high = np.percentile(boot, [2.5, 97.5])
        out.append(Attack(attribute, "text:llm", "llm", "accuracy", float(hits.mean()),
                          (float(low), float(high)), float(counts.max() / counts.sum()),
                          len(hits), choices,
                          revealing=[{"feature": "answers naming no option",
                                      "weight": float(unparsed), "class": ""}]))
    return out
