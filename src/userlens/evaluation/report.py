"""Leaderboard tables and plots for people (JSON for scripts is the report dict itself)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table

from userlens.evaluation.metrics import parse_metric

WIDTH = 100
"""Columns a leaderboard may take (a terminal, a CI log)."""


def leaderboard_table(report: dict, width: int = WIDTH) -> Table:
    """A rich table: one row per model, one column per metric, the best value of each metric
    (in its own direction) in bold green. Each mean carries its 95% CI half-width when the
    table still fits in ``width`` columns; otherwise the caption points to ``--json``, which
    always carries the intervals."""
    # the richest layout that fits: intervals, then means only, then without vertical rules
    # and with two-line headers, then without the timing columns (all of it stays in --json)
    layouts = [{"with_ci": True}, {"with_ci": False},
               {"with_ci": False, "compact": True},
               {"with_ci": False, "compact": True, "timings": False}]
    for layout in layouts:
        table = _table(report, **layout)
        if _natural_width(table) <= width:
            break
    return table


def _natural_width(table: Table) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def _table(report: dict, *, with_ci: bool, compact: bool = False,
           timings: bool = True) -> Table:
    results = report["results"]
    evaluated = {(r.get("users"), r.get("targets_dropped")) for r in results}
    users, dropped = next(iter(evaluated)) if len(evaluated) == 1 else (None, None)
    title = (f"{report['name']}: {report['data']['users']:,} users, "
             f"{report['data']['items']:,} items, {report['data']['interactions']:,} events; "
             f"split {report['split']} (ties: {report.get('tie_rule') or 'not recorded'}); "
             f"protocol {report['protocol']}")
    if users is not None:
        title += f"; {users:,} users evaluated, {dropped or 0:,} repeat targets dropped"
    caption = ("mean ± 95% CI half-width" if with_ci
               else "means; 95% confidence intervals" + ("" if timings else " and timings")
               + " with --json and in report.json")
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD)
    table.add_column("model", style="bold", no_wrap=True)
    metrics = list(results[0]["metrics"]) if results else []
    for metric in metrics:
        header = metric.replace("@", "\n@") if compact else metric
        table.add_column(header, justify="right", no_wrap=True)
    if users is None:  # models evaluated on different users: say so per row
        table.add_column("users", justify="right")
        table.add_column("dropped", justify="right")
    if timings:
        table.add_column("fit s", justify="right")
        table.add_column("eval s", justify="right")
    # the best value in each metric's own direction (ARP and Gini: lower is better)
    best = {m: (min if parse_metric(m).lower_is_better else max)(
        r["metrics"][m] for r in results) for m in metrics}
    for result in results:
        cells = []
        for metric in metrics:
            value = result["metrics"][metric]
            low, high = result.get("ci95", {}).get(metric, [value, value])
            text = f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
            if with_ci and high > low and abs(value) < 100:
                text += f" ±{(high - low) / 2:.4f}"
            cells.append(f"[bold green]{text}[/bold green]" if value == best[metric] else text)
        per_row = ([f"{result.get('users', 0):,}", f"{result.get('targets_dropped', 0):,}"]
                   if users is None else [])
        times = ([f"{result['fit_seconds']:.1f}", f"{result['eval_seconds']:.1f}"] if timings
                 else [])
        table.add_row(result["model"], *cells, *per_row, *times)
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
