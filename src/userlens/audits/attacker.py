"""The attacker of the privacy audit: a cross-validated classifier predicting a personal
attribute from what a system holds about a user (item bag, user vector, profile, text).

Every user is predicted by a model that never saw them (stratified k folds, out-of-fold
predictions), so the numbers are what an attacker with labelled data for *other* users
achieves. Binary attributes report ROC AUC (chance 0.5), others accuracy and top-3
accuracy against the majority class; 95 % intervals are bootstrap percentiles over users.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

logger = logging.getLogger(__name__)

Classifier = Literal["logistic", "boosting"]
CLASSIFIERS: tuple[Classifier, ...] = ("logistic", "boosting")

BOOTSTRAP = 1000
"""Bootstrap resamples of the users for every interval."""

MAX_DENSE_FEATURES = 128
"""Gradient boosting reads at most this many features: sparse or wider inputs are reduced
first (see :func:`reduce`)."""

MAX_LINEAR_FEATURES = 256
"""The logistic attacker reads dense inputs wider than this reduced (lbfgs on 6,040 x 3,416
dense score vectors takes minutes per fit, on 256 components a second)."""


def reduce(x, test_x, n_components: int, seed: int):
    """A truncated SVD fitted once on every user's features, without labels (unsupervised,
    so no label of a held-out user reaches the attacker), applied to both views."""
    svd = TruncatedSVD(min(n_components, x.shape[1] - 1), random_state=seed).fit(x)
    return svd.transform(x), (None if test_x is None else svd.transform(test_x))


@dataclass
class Attack:
    """One attacker's result on one attribute from one source."""

    attribute: str
    source: str
    classifier: str
    metric: Literal["auc", "accuracy"]
    value: float
    ci95: tuple[float, float]
    baseline: float
    """Chance: 0.5 for AUC, the majority class's share for accuracy."""
    n_users: int
    classes: list[str]
    top3: float | None = None
    """Multi-class only: the share of users whose class is among the three most likely."""
    revealing: list[dict] = field(default_factory=list)
    """The features that reveal most (logistic attacker): name, weight, class it points to."""
    probabilities: np.ndarray | None = field(default=None, repr=False)
    """(n_users, n_classes) out-of-fold probabilities (not serialised)."""

    def to_dict(self) -> dict:
        out = {"attribute": self.attribute, "source": self.source,
               "classifier": self.classifier, "metric": self.metric,
               "value": self.value, "ci95": list(self.ci95), "baseline": self.baseline,
               "n_users": self.n_users, "classes": self.classes}
        if self.top3 is not None:
            out["top3"] = self.top3
        if self.revealing:
            out["revealing"] = self.revealing
        return out


def make_classifier(kind: Classifier, input_kind: str, seed: int):
    """The attacker's estimator.

    ``logistic``: a logistic regression whose regularisation is chosen on a held-out
    quarter of the training fold; item bags are TF-IDF weighted first, other sparse
    inputs max-abs scaled, dense ones standardised. ``boosting``: histogram gradient
    boosting (on dense inputs; :func:`attack` reduces the others).

    Args:
        input_kind: ``bag`` (non-negative counts per item), ``sparse`` or ``dense``.
    """
    if kind == "logistic":
        steps: list = []
        if input_kind == "bag":
            steps.append(TfidfTransformer())
        elif input_kind == "sparse":
            steps.append(MaxAbsScaler())
        else:
            steps.append(StandardScaler())
        pipeline = make_pipeline(*steps, LogisticRegression(max_iter=300))
        # one stratified 75/25 split of the training fold picks C: a third of the fits of
        # a 3-fold inner CV, which took minutes per attribute on 21 occupations
        return GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0, 10.0]},
                            cv=StratifiedShuffleSplit(1, test_size=0.25, random_state=seed),
                            scoring="neg_log_loss")
    if kind != "boosting":
        raise ValueError(f"unknown attacker classifier '{kind}'; known: {CLASSIFIERS}")
    return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1,
                                          early_stopping=True, random_state=seed)


OTHER = "(other)"


def merge_rare(labels: np.ndarray, min_count: int) -> np.ndarray:
    """Values held by fewer than ``min_count`` users become one class, ``(other)`` (a
    stratified fold needs every class in each fold); when even that class is too small,
    its users count as unlabelled."""
    known = np.array([value not in (None, "") for value in labels])
    values, counts = np.unique(labels[known].astype(str), return_counts=True)
    rare = set(values[counts < min_count].tolist())
    if not rare:
        return labels
    merged = labels.copy()
    is_rare = np.array([k and str(v) in rare for v, k in zip(labels, known, strict=True)])
    merged[is_rare] = OTHER if is_rare.sum() >= min_count else None
    return merged


def attack(features: np.ndarray | sp.spmatrix, labels: np.ndarray, *, attribute: str,
           source: str, classifier: Classifier = "logistic", folds: int = 5, seed: int = 0,
           feature_names: list[str] | None = None, test_features=None,
           n_revealing: int = 10, bag: bool = False) -> Attack:
    """Cross-validated attack on ``labels`` (strings; None/"" = unlabelled, left out;
    values of fewer than ``folds`` users merged, see :func:`merge_rare`).

    Args:
        test_features: features to predict the held-out fold from instead of ``features``
            (same rows): a *static* attacker trained on one view (clean histories) and
            applied to another (obfuscated ones).
        feature_names: names for the revealing features (logistic attacker only).
        bag: the features are counts per item or word (TF-IDF weighted by the logistic
            attacker).
    """
    labels = merge_rare(np.asarray(labels, dtype=object), folds)
    known = np.array([value not in (None, "") for value in labels])
    if known.sum() < 2 * folds:
        raise ValueError(f"attribute '{attribute}': only {int(known.sum())} labelled users, "
                         f"need at least {2 * folds}")
    rows = np.flatnonzero(known)
    x = features[rows]
    x_test = None if test_features is None else test_features[rows]
    if classifier == "boosting" and (sp.issparse(x) or x.shape[1] > MAX_DENSE_FEATURES):
        x, x_test = reduce(x, x_test, MAX_DENSE_FEATURES, seed)
        feature_names = None
    elif not sp.issparse(x) and x.shape[1] > MAX_LINEAR_FEATURES:
        x, x_test = reduce(x, x_test, MAX_LINEAR_FEATURES, seed)
        feature_names = None
    x_test = x if x_test is None else x_test
    classes, y = np.unique(labels[rows].astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"attribute '{attribute}': every labelled user has the same value "
                         f"'{classes[0]}'")
    smallest = int(np.bincount(y).min())
    n_folds = max(2, min(folds, smallest))
    input_kind = ("bag" if bag else "sparse") if sp.issparse(x) else "dense"
    estimator = make_classifier(classifier, input_kind, seed)
    probabilities = np.zeros((len(rows), len(classes)))
    splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(y)), y):
        fitted = clone(estimator).fit(x[train], y[train])
        # a fold may miss a rare class: place the probabilities by the classes it saw
        probabilities[np.ix_(test, fitted.classes_)] = fitted.predict_proba(x_test[test])
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(y), size=(BOOTSTRAP, len(y)))
    majority = float(np.bincount(y).max() / len(y))
    if len(classes) == 2:
        value = float(roc_auc_score(y, probabilities[:, 1]))
        boot = [roc_auc_score(y[r], probabilities[r, 1]) for r in resamples
                if 0 < y[r].sum() < len(r)]
        metric, baseline, top3 = "auc", 0.5, None
    else:
        predicted = probabilities.argmax(axis=1)
        correct = (predicted == y).astype(np.float64)
        value = float(correct.mean())
        boot = correct[resamples].mean(axis=1)
        ranks = np.argsort(-probabilities, axis=1)[:, :3]
        top3 = float((ranks == y[:, None]).any(axis=1).mean())
        metric, baseline = "accuracy", majority
    low, high = np.percentile(boot, [2.5, 97.5])
    revealing = []
    if classifier == "logistic" and feature_names is not None:
        revealing = _revealing(clone(estimator).fit(x, y), classes, feature_names, n_revealing)
    return Attack(attribute, source, classifier, metric, value, (float(low), float(high)),
                  baseline, len(rows), [str(c) for c in classes], top3, revealing,
                  probabilities)


def _revealing(fitted, classes: np.ndarray, names: list[str], n: int) -> list[dict]:
    """The largest logistic weights (on scaled features) and the class each points to."""
    model = fitted.best_estimator_[-1]
    coefficients = np.atleast_2d(model.coef_)
    out: list[dict] = []
    if coefficients.shape[1] != len(names):  # read through an SVD: no per-feature weights
        return out
    if coefficients.shape[0] == 1:  # binary: positive -> classes[1], negative -> classes[0]
        weights = coefficients[0]
        for j in np.argsort(-np.abs(weights))[:n]:
            out.append({"feature": names[j], "weight": float(weights[j]),
                        "class": str(classes[1] if weights[j] > 0 else classes[0])})
        return out
    flat = np.argsort(-coefficients, axis=None)[:n]
    for c, j in zip(*np.unravel_index(flat, coefficients.shape), strict=True):
        out.append({"feature": names[j], "weight": float(coefficients[c, j]),
                    "class": str(classes[c])})
    return out
