"""The leaderboard people read: fits 100 columns, best value per metric in its direction."""

from __future__ import annotations

from rich.console import Console

from userlens.evaluation.report import leaderboard_table

METRICS = ["hr@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "coverage@10", "novelty@10",
           "arp@10", "gini@10"]  # what configs/ml-1m-baselines.toml asks for


def _report(metrics: list[str]) -> dict:
    results = []
    for n, model in enumerate(["most_popular", "itemknn", "ease", "als", "bpr"]):
        values = {m: 0.01 * (n + 1) + 0.001 * j for j, m in enumerate(metrics)}
        results.append({"model": model, "metrics": values,
                        "ci95": {m: [v - 0.004, v + 0.004] for m, v in values.items()},
                        "users": 6040, "targets_dropped": 0, "fit_seconds": 12.3,
                        "eval_seconds": 1.7})
    return {"name": "ml-1m-baselines", "split": "leave_one_out", "tie_rule": "file order",
            "protocol": "full", "data": {"users": 6040, "items": 3416, "interactions": 999611},
            "results": results}


def _render(report: dict) -> list[str]:
    console = Console(width=100, record=True, color_system=None)
    console.print(leaderboard_table(report))
    return console.export_text().splitlines()


def test_the_ml1m_leaderboard_fits_100_columns_without_wrapping_values():
    lines = _render(_report(METRICS))
    assert max(len(line) for line in lines) <= 100
    row = next(line for line in lines if "itemknn" in line)
    for value in ("0.0200", "0.0210", "0.0280"):  # every metric of the row on its line
        assert value in row
    assert any("--json" in line for line in lines)  # intervals are pointed to, not lost


def test_few_metrics_keep_their_intervals_and_the_title_counts_users():
    lines = _render(_report(["hr@10", "ndcg@10"]))
    assert any("±0.0040" in line for line in lines)
    assert "6,040 users evaluated, 0 repeat targets dropped" in " ".join(" ".join(lines).split())


def test_best_value_is_marked_in_each_metrics_direction():
    report = _report(["hr@10", "gini@10"])
    table = leaderboard_table(report)
    cells = {str(column.header).replace("\n", ""): list(column.cells)
             for column in table.columns}
    assert cells["hr@10"][4].startswith("[bold green]")  # highest hit rate: bpr
    assert cells["gini@10"][0].startswith("[bold green]")  # lowest concentration
