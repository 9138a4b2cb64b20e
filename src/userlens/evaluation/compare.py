"""Paired significance tests between two evaluated runs on the same users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats


def load_per_user(run_dir: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    with np.load(run_dir / "per_user.npz", allow_pickle=False) as data:
        values = {key: data[key] for key in data.files if key != "users"}
        users = data["users"]
    return manifest, values, users


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """Paired t-test and Wilcoxon signed-rank test per metric on the users both runs share.

    Raises:
        ValueError: when the runs were evaluated on different data or protocols.
    """
    run_a, run_b = Path(run_a), Path(run_b)
    manifest_a, values_a, users_a = load_per_user(run_a)
    manifest_b, values_b, users_b = load_per_user(run_b)
    if manifest_a["data"]["fingerprint"] != manifest_b["data"]["fingerprint"]:
        raise ValueError(f"{run_a} and {run_b} were evaluated on different data (fingerprints "
                         "differ); a paired test needs the same users and targets")
    if manifest_a["protocol"] != manifest_b["protocol"]:
        raise ValueError(f"protocols differ: {manifest_a['protocol']} vs "
                         f"{manifest_b['protocol']}")
    common, index_a, index_b = np.intersect1d(users_a, users_b, return_indices=True)
    rows = []
    for metric in sorted(set(values_a) & set(values_b)):
        a, b = values_a[metric][index_a], values_b[metric][index_b]
        difference = b - a
        t_test = stats.ttest_rel(b, a) if np.any(difference) else None
        wilcoxon = stats.wilcoxon(b, a) if np.any(difference) else None
        rows.append({
            "metric": metric,
            "a": float(a.mean()),
            "b": float(b.mean()),
            "difference": float(difference.mean()),
            "t_pvalue": float(t_test.pvalue) if t_test else 1.0,
            "wilcoxon_pvalue": float(wilcoxon.pvalue) if wilcoxon else 1.0,
        })
    return {"a": str(run_a), "b": str(run_b), "users": int(len(common)),
            "protocol": manifest_a["protocol"], "metrics": rows}
