"""``userlens`` command line: parse, build a config, make one library call, show results."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from userlens.cli.common import data_home_path, err, fail, mirror_path, out, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="userlens: user models from event logs, evaluated honestly.")


def _version_callback(value: bool) -> None:
    if value:
        from userlens import __version__

        print(f"userlens {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="print the version and exit")] = False) -> None:
    """userlens: user models from event logs, evaluated honestly."""

@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    json_output: Annotated[bool, typer.Option("--json", help="print only the JSON report")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="default runs/<name>")] = None,
    plot: Annotated[Path | None, typer.Option(help="save a bar chart of the metrics (PNG)")] = None,
    nproc: Annotated[int, typer.Option(help="data-parallel training processes (torch DDP; "
                                            "gloo on CPU, nccl on GPU)")] = 1,
    reuse: Annotated[list[str] | None, typer.Option(
        "--reuse", metavar="LABEL=ARTEFACT",
        help="evaluate the model labelled LABEL from an earlier run's artefact instead of "
             "training it again (checked: same model, parameters, seed, data and split); "
             "repeatable")] = None,
) -> None:
    """Read, filter, split, fit every model, evaluate, and print the leaderboard."""
    from userlens.config import load_config
    from userlens.evaluation.experiment import run_experiment
    from userlens.evaluation.report import leaderboard_table, plot_leaderboard

    try:
        experiment = load_config(config)
    except user_errors() as error:
        fail(str(error))
    target = out_dir or Path("runs") / experiment.name
    reused: dict[str, Path] = {}
    for pair in reuse or []:
        label, sep, folder = pair.partition("=")
        if not sep or not label or not folder:
            fail(f"--reuse {pair}: expected LABEL=ARTEFACT (a model label of the config and "
                 "the artefact folder of an earlier run)")
        reused[label] = Path(folder)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeElapsedColumn(), console=err, transient=True)
    on_event = _run_printer(progress)

    if experiment.conversation is not None:
        _run_conversation(experiment, target, json_output)
        return
    try:
        if nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            report = _run_distributed(config, target, nproc, reused)
            if report is None:  # a torchrun worker other than rank 0
                return
        else:
            with progress:
                report = run_experiment(experiment, target,
                                        mirror=mirror_path(), data_home=data_home_path(),
                                        on_event=on_event, reuse=reused)
    except user_errors() as error:
        fail(str(error).strip("'\""))
    if plot is not None:
        plot_leaderboard(report, plot)
    if json_output:
        print(json.dumps({k: report[k] for k in ("name", "data", "split", "tie_rule",
                                                 "protocol")}
                         | {"results": [{k: r[k] for k in ("model", "metrics", "ci95", "users",
                                                          "targets_dropped", "fit_seconds",
                                                          "eval_seconds")}
                                        for r in report["results"]]}))
        return
    out.print(leaderboard_table(report))
    out.print(f"artefacts: {target}/<model>/ (model, id maps, manifest, per-user metrics)")
    if plot is not None:
        out.print(f"plot: {plot}")


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="experiment TOML file with [models.search]")],
    trials: Annotated[int, typer.Option(min=1, help="trials per searched model")] = 20,
    time_limit: Annotated[float | None, typer.Option(
        "--time-limit", min=1, help="seconds of search per model (a running trial finishes)")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="default runs/<name>/tune")
                       ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print only the JSON summary")
                           ] = False,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="train each winner again for the test instead of testing the "
        "winning trial's own model")] = False,
) -> None:
    """Search each model's [models.search] space with Optuna on validation NDCG@10 only, write
    the best config beside the study, then report test once for the winners (the winning
    trial's own model unless --retrain)."""
    from userlens.config import load_config
    from userlens.evaluation.report import leaderboard_table
    from userlens.evaluation.tune import tune_experiment

    try:
        experiment = load_config(config)
    except user_errors() as error:
        fail(str(error))
    target = out_dir or Path("runs") / experiment.name / "tune"

    def on_event(event: str, payload: dict) -> None:
        if event == "trial_start":
            err.print(f"{payload['model']} trial {payload['trial']}: {payload['params']}",
                      highlight=False)
        elif event == "epoch" and "trial" in payload and any(
                key.startswith("valid_ndcg@") for key in payload):
            key = next(key for key in payload if key.startswith("valid_ndcg@"))
            err.print(f"  epoch {payload['epoch']}: {key.removeprefix('valid_')} "
                      f"{payload[key]:.4f}", highlight=False)
        elif event == "trial_end":
            value = payload["value"]
            err.print(f"{payload['model']} trial {payload['trial']} {payload['state'].lower()}"
                      + (f": valid ndcg@10 {value:.4f}" if value is not None else ""),
                      highlight=False)
        elif event == "test":
            err.print(f"best config: {payload['config']}; evaluating the winners on test "
                      "once", highlight=False)

    try:
        summary = tune_experiment(experiment, target, trials=trials, time_limit=time_limit,
                                  mirror=mirror_path(), data_home=data_home_path(),
                                  on_event=on_event, retrain=retrain)
    except user_errors() as error:
        fail(str(error).strip("'\""))
    if json_output:
        print(json.dumps({k: summary[k] for k in ("name", "objective", "studies",
                                                  "best_config")}
                         | {"test": summary["test"]["results"]}))
        return
    for study in summary["studies"]:
        out.print(f"{study['model']}: best valid ndcg@10 {study['best_valid_ndcg@10']:.4f} "
                  f"(trial {study['best_trial']} of {study['trials']}, {study['pruned']} "
                  f"pruned, {study['seconds']:.0f} s): {study['best_params']}; on test: "
                  f"{study['test_model']}", highlight=False)
    out.print(leaderboard_table(summary["test"]))
    out.print(f"best config: {summary['best_config']}; study: {target}/study.db; test "
              f"artefacts: {target}/winner/")


def _run_printer(progress: Progress) -> Callable[[str, dict], None]:
    """``userlens run``'s progress: data and split lines, a bar per model (fit, epochs with
    validation, evaluation), one line per epoch and the model's metrics when it is done."""
    tasks: dict[str, int] = {}

    def on_event(event: str, payload: dict) -> None:
        if event == "data":
            err.print(f"data: {payload['users']:,} users, {payload['items']:,} items, "
                      f"{payload['interactions']:,} events ({payload['seconds']:.2f} s)")
        elif event == "split":
            err.print(f"split: {payload}")
        elif event == "fit_start":
            tasks[payload["model"]] = progress.add_task(f"fit {payload['model']}", total=None)
            if "reused_from" in payload:
                err.print(f"{payload['model']}: not trained, reused from "
                          f"{payload['reused_from']}", highlight=False)
        elif event == "fit_end":
            progress.update(tasks[payload["model"]],
                            description=f"evaluate {payload['model']}")
        elif event == "epoch":
            key = next((k for k in payload if k.startswith("valid_ndcg@")), None)
            shown = f"{key.removeprefix('valid_')} {payload[key]:.4f}" if key else None
            stage = f" {payload['stage']}" if "stage" in payload else ""
            progress.update(tasks[payload["model"]], description=(
                f"fit {payload['model']}{stage} epoch {payload['epoch']} loss "
                f"{payload['loss']:.4f}" + (f" valid {shown}" if shown else "")
                + f" ({payload['sequences_per_second']:.0f} seq/s)"))
            err.print(f"  {payload['model']}{stage} epoch {payload['epoch']}: loss "
                      f"{payload['loss']:.4f}, {payload['seconds']:.1f} s"
                      + (f", valid {shown}" if shown else ""))
        elif event == "eval_progress":
            progress.update(tasks[payload["model"]], completed=payload["done"],
                            total=payload["total"])
        elif event == "eval_end":
            progress.remove_task(tasks[payload["model"]])
            err.print(f"{payload['model']}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in payload["metrics"].items()))

    return on_event


def _run_conversation(experiment, target: Path, json_output: bool) -> None:
    """``userlens run`` on a ``[conversation]`` config: estimator, policies, simulator."""
    from userlens.conversation.experiment import load_conversation_data, run_conversation

    def show(event: str, payload: dict) -> None:
        if event == "estimator_epoch":
            err.print(f"  estimator epoch {payload['epoch']}: loss {payload['loss']:.4f}, "
                      f"valid hit@10 {payload['valid']:.4f}, {payload['seconds']:.1f} s")
        elif event == "policy_check":
            err.print(f"  {payload['model']} after {payload['episode']} episodes: valid "
                      f"SR {payload['valid_sr']:.3f}, AT {payload['valid_at']:.2f}")
        elif event == "fit_end":
            err.print(f"fit {payload['model']}: {payload['seconds']:.1f} s")
        elif event == "eval_end":
            err.print(f"{payload['model']}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in payload["metrics"].items()))

    config = experiment.conversation
    try:
        data = load_conversation_data(experiment.data.dataset, experiment.data.path,
                                      mirror=mirror_path(), tag_names=config.tag_names)
        report = run_conversation(experiment.name, data, config, target,
                                  seed=experiment.seed, on_event=show)
    except user_errors() as error:
        fail(str(error).strip("'\""))
    if json_output:
        print(json.dumps({k: report[k] for k in ("name", "data", "split", "tie_rule",
                                                 "protocol")}
                         | {"results": [{k: r[k] for k in (
                             "model", "metrics", "ci95", "users", "fit_seconds",
                             "eval_seconds", "questions_per_episode", "success_by_turn")}
                             for r in report["results"]]}))
        return
    table = Table(title=f"{report['name']}: {report['split']['test']:,} simulated "
                        f"conversations (at most {config.max_turns} turns)")
    for column in ("policy", "SR@5", "SR@10", f"SR@{config.max_turns}", "AT",
                   "questions", "train s"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in report["results"]:
        m = row["metrics"]
        table.add_row(row["model"], f"{m['sr@5']:.3f}", f"{m['sr@10']:.3f}",
                      f"{m[f'sr@{config.max_turns}']:.3f}", f"{m['at']:.2f}",
                      f"{row['questions_per_episode']:.1f}", f"{row['fit_seconds']:.0f}")
    out.print(table)
    out.print(f"artefacts: {target}/ (estimator, policies, results.json, "
              "success_by_turn.png)")


def _print_event(event: str, payload: dict) -> None:
    if event in ("data", "split", "fit_end", "eval_end", "epoch"):
        err.print(f"{event}: {payload}", highlight=False)


def _distributed_worker(rank: int, world_size: int, config: Path, target: Path,
                        mirror: Path | None, data_home: Path,
                        reuse: dict[str, Path]) -> dict | None:
    from userlens.config import load_config
    from userlens.evaluation.experiment import run_experiment

    return run_experiment(load_config(config), target, mirror=mirror, data_home=data_home,
                          on_event=_print_event, rank=rank, world_size=world_size,
                          reuse=reuse)


def _run_distributed(config: Path, target: Path, nproc: int,
                     reuse: dict[str, Path]) -> dict | None:
    """Spawn ``nproc`` workers, or join torchrun's group when WORLD_SIZE is set."""
    from userlens.models.nn import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world_size = distributed.init_from_environment()
        return _distributed_worker(rank, world_size, config, target, mirror_path(),
                                   data_home_path(), reuse)
    return distributed.launch(_distributed_worker, nproc, config, target, mirror_path(),
                              data_home_path(), reuse)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="artefact dir of model A (runs/NAME/MODEL)")],
    run_b: Annotated[Path, typer.Argument(help="artefact dir of model B")],
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Paired significance tests (t-test, Wilcoxon) between two runs, per metric."""
    from userlens.evaluation.compare import compare_runs

    try:
        result = compare_runs(run_a, run_b)
    except user_errors() as error:
        fail(str(error))
    if json_output:
        print(json.dumps(result))
        return
    table = Table(title=f"{run_a} (A) vs {run_b} (B), {result['users']:,} paired users, "
                        f"protocol {result['protocol']}", title_justify="left")
    for column in ("metric", "A", "B", "B - A", "t-test p", "Wilcoxon p"):
        table.add_column(column, justify="right")
    for row in result["metrics"]:
        table.add_row(row["metric"], f"{row['a']:.4f}", f"{row['b']:.4f}",
                      f"{row['difference']:+.4f}", f"{row['t_pvalue']:.2g}",
                      f"{row['wilcoxon_pvalue']:.2g}")
    out.print(table)


def _register_commands() -> None:
    from userlens.cli.audit import audit_app
    from userlens.cli.catalog import datasets_app, describe, models_app
    from userlens.cli.profiles import profile_command, profiles_app
    from userlens.cli.serving import converse, import_events, serve

    app.command()(describe)
    app.command()(serve)
    app.command()(converse)
    app.command("import-events")(import_events)
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(models_app, name="models")
    app.command("profile")(profile_command)
    app.add_typer(profiles_app, name="profiles")
    app.add_typer(audit_app, name="audit")


_register_commands()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    sys.exit(main())
