"""``userlens audit privacy|fairness|manipulation CONFIG``: reports, JSON and plots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from userlens.cli.common import data_home_path, err, fail, mirror_path, out, user_errors

audit_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Audits: what models reveal, whom they serve worse, who can "
                             "manipulate them.")

ConfigArg = Annotated[Path, typer.Argument(help="experiment TOML file with an [audit] section")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print only the JSON report")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="report folder (default "
                                                          "runs/<name>/audit)")]
FromRunOpt = Annotated[Path | None, typer.Option(
    "--from-run", help="load the models of a 'userlens run' of this config (runs/<name>) "
                       "instead of fitting them")]


def _notify(started: float) -> Callable[[str, dict], None]:
    def notify(event: str, payload: dict) -> None:
        if event in ("llm_progress",) and payload["done"] % 20 and \
                payload["done"] != payload["total"]:
            return
        details = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in payload.items())
        err.print(f"[dim]{time.perf_counter() - started:7.1f} s[/dim] {event} {details}",
                  highlight=False)
    return notify


def _run(kind: str, config_path: Path, json_output: bool, out_dir: Path | None,
         from_run: Path | None, audit: Callable, plot: Callable | None,
         table: Callable) -> None:
    from userlens.artefact import ArtefactError
    from userlens.audits.attributes import MissingAttributeError
    from userlens.config import load_config
    from userlens.pipeline import load_data, make_split

    started = time.perf_counter()
    try:
        config = load_config(config_path)
        dataset = load_data(config.data, mirror=mirror_path(), data_home=data_home_path())
        split = make_split(dataset, config.split, config.seed)
        report = audit(config, dataset, split, notify=_notify(started), from_run=from_run)
    except (MissingAttributeError, ArtefactError, *user_errors()) as error:
        fail(str(error).strip("'\""))
    target = out_dir or Path("runs") / config.name / "audit"
    target.mkdir(parents=True, exist_ok=True)
    report["seconds"] = time.perf_counter() - started
    (target / f"{kind}.json").write_text(json.dumps(report, indent=2))
    plots = []
    if plot is not None:
        try:
            plots = plot(report, target)
        except RuntimeError as error:  # no matplotlib
            err.print(f"no plots: {error}")
    if json_output:
        print(json.dumps(report))
        return
    for part in table(report):
        out.print(part)
    out.print(f"report: {target / f'{kind}.json'}" + "".join(f"\nplot: {p}" for p in plots)
              + f"\n{report['seconds']:.0f} s")


def _ci(row: dict, key: str = "value") -> str:
    low, high = row["ci95"]
    return f"{row[key]:.3f} [{low:.3f}, {high:.3f}]"


def privacy_tables(report: dict) -> list[Table]:
    attacks = Table(title="Attribute inference (cross-validated attackers)")
    for column in ("attribute", "source", "classifier", "metric", "value [95% CI]", "chance",
                   "top-3", "most revealing"):
        attacks.add_column(column)
    for row in report["attacks"]:
        revealing = ", ".join(f"{r['feature']} ({r['class']})" for r in row.get("revealing",
                                                                                [])[:3])
        attacks.add_row(row["attribute"], row["source"], row["classifier"], row["metric"],
                        _ci(row), f"{row['baseline']:.3f}",
                        f"{row['top3']:.3f}" if row.get("top3") is not None else "",
                        revealing[:80])
    mitigations = Table(title=f"Mitigations ({report.get('mitigated_attribute')}): strongest "
                              "attacker against NDCG@10")
    for column in ("mitigation", "strength", "model", "attacker", "NDCG@10", "change",
                   "retrained"):
        mitigations.add_column(column)
    for row in report["mitigations"]:
        change = row["ndcg@10"] / row["ndcg@10_before"] - 1 if row["ndcg@10_before"] else 0.0
        mitigations.add_row(row["name"], f"{row['strength']:g}", row["model"],
                            f"{row['value']:.3f}", f"{row['ndcg@10']:.4f}", f"{change:+.1%}",
                            "yes" if row["retrained"] else "no")
    return [attacks, mitigations]


def fairness_tables(report: dict) -> list[Table]:
    gaps = Table(title="Largest NDCG@10 gap between user groups")
    for column in ("by", "model", "best", "worst", "gap", "relative", "Kruskal p"):
        gaps.add_column(column)
    for row in report["gaps"]:
        gaps.add_row(row["by"], row["model"], row["best"], row["worst"], f"{row['gap']:.4f}",
                     f"{row['relative']:.1%}", f"{row['kruskal_p']:.2g}")
    rerankers = Table(title="Re-rankers: utility, calibration and exposure")
    for column in ("model", "re-ranker", "NDCG@10", "cost", "calibration KL", "tail share",
                   "Gini"):
        rerankers.add_column(column)
    for row in report["rerankers"]:
        cost = row.get("utility_cost")
        rerankers.add_row(row["model"], row["reranker"] or "(none)", f"{row['ndcg@10']:.4f}",
                          f"{cost:.1%}" if cost is not None else "",
                          f"{row['calibration_kl']:.3f}", f"{row['tail_share']:.3f}",
                          f"{row['gini']:.3f}")
    return [gaps, rerankers]


def manipulation_tables(report: dict) -> list[Table]:
    attacks = Table(title="Injected fake users: target items' HR@50 over real users")
    for column in ("attack", "share", "model", "defence", "HR@50 before", "HR@50 after",
                   "lift kept", "HR@10 after", "NDCG@10", "clean NDCG@10", "weight fake/real"):
        attacks.add_column(column)
    undefended = {(r["attack"], r["share"], r["model"]): r for r in report["attacks"]
                  if r["defence"] is None}
    for row in report["attacks"]:
        plain = undefended.get((row["attack"], row["share"], row["model"]))
        lift = plain["target_hr@50_after"] - plain["target_hr@50_before"] if plain else 0.0
        kept = ((row["target_hr@50_after"] - row["target_hr@50_before"]) / lift
                if row["defence"] and lift > 0 else None)
        weights = (f"{row['weight_fake']:.2f} / {row['weight_real']:.3f}"
                   if "weight_fake" in row else "-")
        attacks.add_row(row["attack"], f"{row['share']:.0%}", row["model"],
                        row["defence"] or "-", f"{row['target_hr@50_before']:.4f}",
                        f"{row['target_hr@50_after']:.4f}",
                        "-" if kept is None else f"{kept:.0%}",
                        f"{row.get('target_hr@10_after', float('nan')):.4f}",
                        f"{row['ndcg@10']:.4f}", f"{row.get('ndcg@10_before', float('nan')):.4f}",
                        weights)
    detection = Table(title="Fake-user detection")
    for column in ("attack", "share", "precision", "recall", "AUC"):
        detection.add_column(column)
    for row in report["detection"]:
        detection.add_row(row["attack"], f"{row['share']:.0%}", f"{row['precision']:.3f}",
                          f"{row['recall']:.3f}", f"{row['auc']:.3f}")
    return [attacks, detection]


@audit_app.command("privacy")
def privacy(config: ConfigArg, json_output: JsonOpt = False, out_dir: OutOpt = None,
            from_run: FromRunOpt = None) -> None:
    """Attribute inference from histories, model vectors, profiles (and text), with the
    privacy-utility curves of three mitigations."""
    from userlens.audits import plots
    from userlens.audits.privacy import run_privacy

    _run("privacy", config, json_output, out_dir, from_run, run_privacy,
         lambda report, target: [plots.privacy_utility(report, target / "privacy_utility.png")],
         privacy_tables)


@audit_app.command("fairness")
def fairness(config: ConfigArg, json_output: JsonOpt = False, out_dir: OutOpt = None,
             from_run: FromRunOpt = None) -> None:
    """Utility by user group, exposure by item group, calibration, and re-rankers."""
    from userlens.audits import plots
    from userlens.audits.fairness import run_fairness

    _run("fairness", config, json_output, out_dir, from_run, run_fairness,
         lambda report, target: [plots.group_gaps(report, target / "fairness_groups.png")],
         fairness_tables)


@audit_app.command("manipulation")
def manipulation(config: ConfigArg, json_output: JsonOpt = False, out_dir: OutOpt = None,
                 from_run: FromRunOpt = None) -> None:
    """Fake users injected at several shares: target items' lift per model, and detection."""
    from userlens.audits import plots
    from userlens.audits.manipulation import run_manipulation

    _run("manipulation", config, json_output, out_dir, from_run, run_manipulation,
         lambda report, target: [plots.attack_lift(report, target / "manipulation_lift.png")],
         manipulation_tables)
