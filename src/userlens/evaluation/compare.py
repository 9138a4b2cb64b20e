"""Paired significance tests between two evaluated runs on the same users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from userlens.artefact import read_evaluation


def _split_key(manifest: dict) -> dict:
    """What decides which events are test targets: method, parameters, tie rule."""
    split = manifest.get("split", {})
    return split.get("parameters") or {"method": split.get("method")}


def paired_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Means, mean difference b - a, and paired t-test and Wilcoxon p-values of one
    metric's per-user values (p = 1 when the two columns are equal)."""
    difference = b - a
    t_test = stats.ttest_rel(b, a) if np.any(difference) else None
    wilcoxon = stats.wilcoxon(b, a) if np.any(difference) else None
    return {"a": float(a.mean()), "b": float(b.mean()),
            "difference": float(difference.mean()),
            "t_pvalue": float(t_test.pvalue) if t_test else 1.0,
            "wilcoxon_pvalue": float(wilcoxon.pvalue) if wilcoxon else 1.0}


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """Paired t-test and Wilcoxon signed-rank test per metric on the users both runs share.

    Raises:
        ValueError: when the runs were evaluated on different data, splits (method,
            parameters, seed where the split draws, tie rule) or protocols.
    """
    run_a, run_b = Path(run_a), Path(run_b)
    manifest_a, values_a, users_a = read_evaluation(run_a)
    manifest_b, values_b, users_b = read_evaluation(run_b)
    check_pairable(manifest_a, manifest_b, run_a, run_b)
    common, index_a, index_b = np.intersect1d(users_a, users_b, return_indices=True)
    rows = []
    for metric in sorted(set(values_a) & set(values_b)):
        rows.append({"metric": metric, **paired_test(values_a[metric][index_a],
                                                     values_b[metric][index_b])})
    return {"a": str(run_a), "b": str(run_b), "users": int(len(common)),
            "protocol": manifest_a["protocol"], "metrics": rows}


def check_pairable(manifest_a: dict, manifest_b: dict, run_a: str | Path,
                   run_b: str | Path) -> None:
    """Raise ValueError unless two evaluations (their manifests' ``data``, ``split`` and
    ``protocol``) have the same data, test targets and protocol, so users pair one to one."""
    if manifest_a["data"]["fingerprint"] != manifest_b["data"]["fingerprint"]:
        raise ValueError(f"{run_a} and {run_b} were evaluated on different data (fingerprints "
                         "differ); a paired test needs the same users and targets")
    split_a, split_b = _split_key(manifest_a), _split_key(manifest_b)
    if split_a != split_b:
        differ = sorted(k for k in set(split_a) | set(split_b)
                        if split_a.get(k) != split_b.get(k))
        raise ValueError(f"{run_a} and {run_b} were evaluated on different splits "
                         f"({', '.join(differ)} differ: {[split_a.get(k) for k in differ]} vs "
                         f"{[split_b.get(k) for k in differ]}); a paired test needs the same "
                         "test targets")
    if manifest_a["protocol"] != manifest_b["protocol"]:
        raise ValueError(f"protocols differ: {manifest_a['protocol']} vs "
                         f"{manifest_b['protocol']}")
