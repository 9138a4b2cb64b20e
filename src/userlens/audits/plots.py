"""PNG plots of the audit reports (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("plots need matplotlib: pip install 'userlens[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, axes, path: Path) -> Path:
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def privacy_utility(report: dict, path: Path) -> Path:
    """Attacker AUC (or accuracy) against NDCG@10, one panel per model, a line per
    mitigation through its strengths; the goal (AUC 0.60, 5 % NDCG loss) dashed."""
    plt = _pyplot()
    rows = report["mitigations"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        before = mine[0]["ndcg@10_before"]
        for name in dict.fromkeys(r["name"] for r in mine if r["name"] != "none"):
            line = [r for r in mine if r["name"] == name]
            # history mitigations start from the clean history; inlp has its own 0 rounds
            start = [r for r in mine if r["name"] == "none"] if name != "inlp" else []
            points = start + line
            axis.plot([p["value"] for p in points], [p["ndcg@10"] for p in points],
                      marker="o", label=name)
            for p in line:
                axis.annotate(f"{p['strength']:g}", (p["value"], p["ndcg@10"]), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")
        axis.axhline(0.95 * before, linestyle="--", color="grey", linewidth=0.8)
        if mine[0]["metric"] == "auc":
            axis.axvline(0.60, linestyle="--", color="grey", linewidth=0.8)
        axis.set_title(model)
        axis.set_xlabel(f"attacker {mine[0]['metric']} ({mine[0]['attribute']})")
        axis.set_ylabel("NDCG@10")
    return _save(plt, figure, axes, path)


def group_gaps(report: dict, path: Path) -> Path:
    """NDCG@10 per user group with 95 % intervals, one panel per grouping."""
    plt = _pyplot()
    rows = report["groups"]
    groupings = list(dict.fromkeys(r["by"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(len(groupings), 1, figsize=(9, 2.6 * len(groupings)),
                                squeeze=False)
    width = 0.8 / max(1, len(models))
    for axis, by in zip(axes[:, 0], groupings, strict=True):
        labels = list(dict.fromkeys(r["group"] for r in rows if r["by"] == by))
        for m, model in enumerate(models):
            mine = {r["group"]: r for r in rows if r["by"] == by and r["model"] == model}
            xs = [i + m * width for i in range(len(labels))]
            means = [mine[g]["ndcg@10"] for g in labels]
            errors = [[mine[g]["ndcg@10"] - mine[g]["ci95"][0] for g in labels],
                      [mine[g]["ci95"][1] - mine[g]["ndcg@10"] for g in labels]]
            axis.bar(xs, means, width, yerr=errors, label=model, capsize=2)
        axis.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(labels))])
        axis.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
        axis.set_ylabel("NDCG@10")
        axis.set_title(by, fontsize=9)
    return _save(plt, figure, axes, path)


def attack_lift(report: dict, path: Path) -> Path:
    """Target HR@50 before and after each attack, per share of fake users; defended
    retrainings as crosses in the attack's colour."""
    plt = _pyplot()
    rows = [r for r in report["attacks"] if r["defence"] is None]
    defended = [r for r in report["attacks"] if r["defence"] is not None]
    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        for attack in dict.fromkeys(r["attack"] for r in rows):
            line = sorted((r for r in rows if r["model"] == model and r["attack"] == attack),
                          key=lambda r: r["share"])
            (drawn,) = axis.plot([r["share"] * 100 for r in line],
                                 [r["target_hr@50_after"] for r in line], marker="o",
                                 label=attack)
            points = [r for r in defended if r["model"] == model and r["attack"] == attack]
            if points:
                axis.scatter([r["share"] * 100 for r in points],
                             [r["target_hr@50_after"] for r in points], marker="x",
                             color=drawn.get_color(), label=f"{attack} (defended)")
        axis.axhline(next(r["target_hr@50_before"] for r in rows if r["model"] == model),
                     linestyle="--", color="grey", linewidth=0.8)
        axis.set_title(model)
        axis.set_xlabel("fake users (%)")
        axis.set_ylabel("target HR@50")
    return _save(plt, figure, axes, path)
