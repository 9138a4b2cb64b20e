"""Leaderboard tables and plots for people (JSON for scripts is the report dict itself)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

LOWER_IS_BETTER = ("arp", "gini")


def leaderboard_table(report: dict) -> Table:
    """A rich table: one row per model, one column per metric (mean ± 95% CI half-width)."""
    title = (f"{report['name']} — {report['data']['users']:,} users, "
             f"{report['data']['items']:,} items, {report['data']['interactions']:,} events; "
             f"split {report['split']} (ties: {report.get('tie_rule') or 'file order'}); "
             f"protocol {report['protocol']}")
    table = Table(title=title, title_justify="left")
    table.add_column("model", style="bold")
    metrics = list(report["results"][0]["metrics"]) if report["results"] else []
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("users", justify="right")
    table.add_column("dropped", justify="right")  # repeat targets the protocol cannot rank
    table.add_column("fit s", justify="right")
    table.add_column("eval s", justify="right")
    # the best value in each metric's own direction: less popularity bias and concentration
    # (ARP, Gini) is better, more of everything else
    best = {m: (min if m.split("@")[0] in LOWER_IS_BETTER else max)(
        r["metrics"][m] for r in report["results"]) for m in metrics}
    for result in report["results"]:
        cells = []
        for metric in metrics:
            value = result["metrics"][metric]
            low, high = result.get("ci95", {}).get(metric, [value, value])
            text = f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
            if high > low:
                text += f" ±{(high - low) / 2:.4f}" if abs(value) < 100 else ""
            cells.append(f"[green]{text}[/green]" if value == best[metric] else text)
        table.add_row(result["model"], *cells, f"{result.get('users', 0):,}",
                      f"{result.get('targets_dropped', 0):,}", f"{result['fit_seconds']:.2f}",
                      f"{result['eval_seconds']:.2f}")
    return table


def plot_leaderboard(report: dict, path: str | Path, metrics: list[str] | None = None) -> Path:
    """Grouped bar chart of accuracy metrics per model, with 95% CI error bars, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = report["results"]
    if metrics is None:
        metrics = [m for m in results[0]["metrics"]
                   if m.split("@")[0] in ("hr", "recall", "precision", "ndcg", "mrr", "map")]
    width = 0.8 / max(len(metrics), 1)
    x = np.arange(len(results))
    figure, axis = plt.subplots(figsize=(1.6 * len(results) + 3, 4.5))
    for j, metric in enumerate(metrics):
        means = [r["metrics"][metric] for r in results]
        errors = [(r["ci95"][metric][1] - r["ci95"][metric][0]) / 2 for r in results]
        axis.bar(x + j * width, means, width, yerr=errors, capsize=3, label=metric)
    axis.set_xticks(x + width * (len(metrics) - 1) / 2, [r["model"] for r in results])
    axis.set_ylabel("mean over test users (95% CI)")
    axis.set_title(f"{report['name']} ({report['split']}, {report['protocol']} ranking)")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
