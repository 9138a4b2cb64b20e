"""``userlens`` command line: parse, build a config, make one library call, show results."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="userlens: user models from event logs, evaluated honestly.")
datasets_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Public datasets: list and fetch.")
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(invoke_without_command=True, rich_markup_mode=None,
                         help="The models userlens can train, and their parameters.")
app.add_typer(models_app, name="models")


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

err = Console(stderr=True)
# When piped (CI logs, files) render at the 100 columns tables are laid out for, not 80.
out = Console() if sys.stdout.isatty() else Console(width=100)


def _mirror() -> Path | None:
    """USERLENS_DATA_MIRROR, else a shared/data folder beside this checkout (found upward
    from the working directory)."""
    from userlens.data.datasets import find_mirror

    value = os.environ.get("USERLENS_DATA_MIRROR")
    return Path(value) if value else find_mirror()


def _data_home() -> Path:
    from userlens.data.datasets import DEFAULT_DATA_HOME

    value = os.environ.get("USERLENS_DATA_HOME")
    return Path(value) if value else DEFAULT_DATA_HOME


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from userlens.config import ConfigError
    from userlens.data.filters import EmptyDatasetError
    from userlens.data.readers import DataFormatError
    from userlens.data.splits import LeakageError

    return (ConfigError, DataFormatError, EmptyDatasetError, LeakageError, FileNotFoundError,
            KeyError, ValueError, MemoryError)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    json_output: Annotated[bool, typer.Option("--json", help="print only the JSON report")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="default runs/<name>")] = None,
    plot: Annotated[Path | None, typer.Option(help="save a bar chart of the metrics (PNG)")] = None,
    nproc: Annotated[int, typer.Option(help="data-parallel training processes (torch DDP; "
                                            "gloo on CPU, nccl on GPU)")] = 1,
) -> None:
    """Read, filter, split, fit every model, evaluate, and print the leaderboard."""
    from userlens.config import load_config
    from userlens.evaluation.experiment import run_experiment
    from userlens.evaluation.report import leaderboard_table, plot_leaderboard

    try:
        experiment = load_config(config)
    except _user_errors() as error:
        _fail(str(error))
    target = out_dir or Path("runs") / experiment.name
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, int] = {}

    def on_event(event: str, payload: dict) -> None:
        if event == "data":
            err.print(f"data: {payload['users']:,} users, {payload['items']:,} items, "
                      f"{payload['interactions']:,} events ({payload['seconds']:.2f} s)")
        elif event == "split":
            err.print(f"split: {payload}")
        elif event == "fit_start":
            tasks[payload["model"]] = progress.add_task(f"fit {payload['model']}", total=None)
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

    if experiment.conversation is not None:
        _run_conversation(experiment, target, json_output)
        return
    try:
        if nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            report = _run_distributed(config, target, nproc)
            if report is None:  # a torchrun worker other than rank 0
                return
        else:
            with progress:
                report = run_experiment(experiment, target,
                                        mirror=_mirror(), data_home=_data_home(),
                                        on_event=on_event)
    except _user_errors() as error:
        _fail(str(error).strip("'\""))
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
) -> None:
    """Search each model's [models.search] space with Optuna on validation NDCG@10 only, write
    the best config beside the study, then train the winners and report test once."""
    from userlens.config import load_config
    from userlens.evaluation.report import leaderboard_table
    from userlens.evaluation.tune import tune_experiment

    try:
        experiment = load_config(config)
    except _user_errors() as error:
        _fail(str(error))
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
            err.print(f"best config: {payload['config']}; training the winners and "
                      "evaluating on test once", highlight=False)

    try:
        summary = tune_experiment(experiment, target, trials=trials, time_limit=time_limit,
                                  mirror=_mirror(), data_home=_data_home(), on_event=on_event)
    except _user_errors() as error:
        _fail(str(error).strip("'\""))
    if json_output:
        print(json.dumps({k: summary[k] for k in ("name", "objective", "studies",
                                                  "best_config")}
                         | {"test": summary["test"]["results"]}))
        return
    for study in summary["studies"]:
        out.print(f"{study['model']}: best valid ndcg@10 {study['best_valid_ndcg@10']:.4f} "
                  f"(trial {study['best_trial']} of {study['trials']}, {study['pruned']} "
                  f"pruned, {study['seconds']:.0f} s): {study['best_params']}",
                  highlight=False)
    out.print(leaderboard_table(summary["test"]))
    out.print(f"best config: {summary['best_config']}; study: {target}/study.db; test "
              f"artefacts: {target}/winner/")


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
                                      mirror=_mirror(), tag_names=config.tag_names)
        report = run_conversation(experiment.name, data, config, target,
                                  seed=experiment.seed, on_event=show)
    except _user_errors() as error:
        _fail(str(error).strip("'\""))
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
                        mirror: Path | None, data_home: Path) -> dict | None:
    from userlens.config import load_config
    from userlens.evaluation.experiment import run_experiment

    return run_experiment(load_config(config), target, mirror=mirror, data_home=data_home,
                          on_event=_print_event, rank=rank, world_size=world_size)


def _run_distributed(config: Path, target: Path, nproc: int) -> dict | None:
    """Spawn ``nproc`` workers, or join torchrun's group when WORLD_SIZE is set."""
    from userlens.models.nn import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world_size = distributed.init_from_environment()
        return _distributed_worker(rank, world_size, config, target, _mirror(), _data_home())
    return distributed.launch(_distributed_worker, nproc, config, target, _mirror(),
                              _data_home())


@app.command()
def describe(
    data: Annotated[str, typer.Argument(
        help="a file or folder, a registered dataset name, or an experiment config (.toml)")],
    format: Annotated[str | None, typer.Option(help="csv, tsv, parquet, jsonl, movielens, "
                                                     "recbole, sequences, amazon")] = None,
    columns: Annotated[str | None, typer.Option(
        help="column map, e.g. user=uid,item=movie,time=ts,value=rating,event_type=kind")
    ] = None,
    min_item_interactions: Annotated[int, typer.Option()] = 0,
    min_user_interactions: Annotated[int, typer.Option()] = 0,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Users, items, density, history lengths, popularity concentration and warnings.

    Given a config, describes its data after the config's filters.
    """
    from userlens.data import filters
    from userlens.data.datasets import REGISTRY, resolve
    from userlens.data.describe import describe as describe_events
    from userlens.data.readers import ColumnMap, read

    try:
        column_map = _parse_columns(columns) if columns else None
        if data.endswith(".toml"):
            from userlens.config import load_config
            from userlens.pipeline import load_data

            dataset = load_data(load_config(data).data, mirror=_mirror(),
                                data_home=_data_home())
            path = Path(data)
        elif data in REGISTRY:
            from userlens.pipeline import read_registered

            path = resolve(data, mirror=_mirror(), data_home=_data_home())[0]
            dataset = read_registered(data, mirror=_mirror(), data_home=_data_home(),
                                      columns=column_map)
        else:
            path = Path(data)
            dataset = read(path, format, column_map or ColumnMap())
        if min_item_interactions or min_user_interactions:
            dataset = filters.k_core(dataset, min_user_interactions, min_item_interactions)
    except _user_errors() as error:
        _fail(str(error).strip("'\""))
    stats = describe_events(dataset.interactions)
    if json_output:
        print(json.dumps(stats))
        return
    table = Table(title=f"{path}", show_header=False, title_justify="left")
    for key, value in stats.items():
        if key == "warnings":
            continue
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v:,.0f}" if isinstance(v, int | float) else f"{k} {v}"
                              for k, v in value.items())
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key, str(value))
    out.print(table)
    for warning in stats["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {warning}")


def _parse_columns(text: str):
    """``user=uid,item=movie`` -> ColumnMap; an unknown role lists the valid ones."""
    from userlens.data.readers import ColumnMap

    roles = list(ColumnMap.model_fields)
    mapping = {}
    for part in text.split(","):
        role, sep, column = part.partition("=")
        role = role.strip()
        if not sep or role not in roles or not column.strip():
            raise ValueError(f"--columns: {part!r} must be role=column with role one of "
                             f"{', '.join(roles)}")
        mapping[role] = column.strip()
    return ColumnMap(**mapping)


@models_app.callback()
def models_list(ctx: typer.Context,
                json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the models (without a subcommand); `userlens models show NAME` for parameters."""
    if ctx.invoked_subcommand is not None:
        return
    from userlens.models.registry import MODEL_NAMES, config_class

    rows = [{"name": name, "config": config_class(name).__name__,
             "summary": (config_class(name).__doc__ or "").strip().split("\n")[0]}
            for name in MODEL_NAMES]
    if json_output:
        print(json.dumps(rows))
        return
    table = Table(title="models (userlens models show NAME for every parameter)")
    for column in ("name", "parameters"):
        table.add_column(column)
    for name in MODEL_NAMES:
        table.add_row(name, ", ".join(config_class(name).model_fields))
    out.print(table)


@models_app.command("show")
def models_show(name: str, json_output: Annotated[bool, typer.Option("--json")] = False
                ) -> None:
    """Every parameter of a model: name, type, default and meaning."""
    from userlens.models.registry import MODEL_NAMES, config_class

    if name not in MODEL_NAMES:
        _fail(f"unknown model '{name}'; known models: {', '.join(MODEL_NAMES)}")
    rows = []
    for field, info in config_class(name).model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation)
        rows.append({"name": field, "type": type_name.replace("typing.", ""),
                     "default": info.get_default(call_default_factory=True),
                     "meaning": (info.description or "").strip()})
    if json_output:
        print(json.dumps(rows, default=str))
        return
    table = Table(title=escape(f"{name} parameters ([[models]] params = {{ ... }})"))
    for column in ("name", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["type"], repr(row["default"]), row["meaning"])
    out.print(table)


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
    except _user_errors() as error:
        _fail(str(error))
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


@app.command()
def serve(
    artefact: Annotated[Path, typer.Argument(help="artefact dir to serve (runs/NAME/MODEL)")],
    db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL (default: SQLite file $USERLENS_HOME/events.db)")] = None,
    host: Annotated[str | None, typer.Option(help="[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[default: 8000]")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="[default: 1]")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="allow a non-loopback host without API keys")] = False,
    rerank: Annotated[str | None, typer.Option(
        help="re-rank personalised lists: calibrated, mmr or exposure[:LAMBDA] "
             "(see 'userlens audit fairness')")] = None,
    conversation: Annotated[Path | None, typer.Option(
        help="a [conversation] run folder to serve at /conversations")] = None,
) -> None:
    """Serve an artefact over HTTP: events in, recommendations out (FastAPI + uvicorn).

    API keys come from the environment, never from flags: USERLENS_API_KEY (every scope) or
    USERLENS_API_KEYS_FILE (lines of scope:key, scopes read, write, admin). Every other
    setting can also come from a USERLENS_* variable (USERLENS_DB, USERLENS_HOME,
    USERLENS_MAX_BODY_BYTES, ...); flags win.
    """
    from pydantic import ValidationError

    from userlens.serving import server
    from userlens.serving.app import create_app
    from userlens.serving.engine import ArtefactError
    from userlens.serving.service import load_engine, served_state
    from userlens.serving.settings import KeyFileError, ServeSettings
    from userlens.serving.storage import Storage

    flags = {"db": db, "host": host, "port": port, "workers": workers,
             "insecure": insecure or None, "rerank": rerank, "conversation": conversation}
    try:
        settings = ServeSettings(artefact=artefact,
                                 **{k: v for k, v in flags.items() if v is not None})
        refusal = server.check_exposure(settings)
        if refusal:
            _fail(refusal)
        storage = Storage(settings.database_url())  # migrations run once, here
        engine = load_engine(artefact, settings)
        if settings.conversation is not None:
            from userlens.conversation.bundle import ConversationBundle

            ConversationBundle.load(settings.conversation)  # fail here, with one clear line
    except (ArtefactError, KeyFileError, OSError, ValueError, ValidationError) as error:
        _fail(str(error))
    storage.set_state("artefact", served_state(engine))  # what every worker should serve
    keys = "API keys required" if settings.keys() else "no API keys (loopback only)"
    err.print(f"serving {engine.version} ({engine.n_items:,} items) on "
              f"http://{settings.host}:{settings.port}; events in {storage.url}; {keys}; "
              "docs at /docs", highlight=False)
    if settings.workers == 1:
        server.run(settings, create_app(engine, storage, settings))
        return
    storage.close()
    del engine  # each worker loads its own copy
    server.run(settings)


@app.command()
def converse(
    artefact: Annotated[Path, typer.Argument(help="a [conversation] run folder (runs/NAME)")],
    user: Annotated[str | None, typer.Option(help="a user id the model was trained on")] = None,
    history: Annotated[str | None, typer.Option(help="comma-separated item ids, oldest "
                                                     "first (an anonymous user)")] = None,
) -> None:
    """Talk to a conversational recommender in the terminal: answer its questions with y/n,
    accept a listed item by its number, or r to reject the list (q quits)."""
    from userlens.conversation.bundle import BundleError, ConversationBundle

    try:
        bundle = ConversationBundle.load(artefact)
    except (BundleError, OSError, KeyError, ValueError) as error:
        _fail(str(error))
    items = [x.strip() for x in (history or "").split(",") if x.strip()]
    known = [int(x) for x in items if x.isdigit() and int(x) < bundle.conversations.n_items]
    trained = int(user) if user is not None and user.isdigit() else None
    conversation = bundle.conversations.start(trained, known)
    out.print(f"[bold]{bundle.policy_name}[/bold] over {bundle.conversations.n_items:,} items "
              f"and {bundle.conversations.n_attributes:,} attributes; at most "
              f"{bundle.max_turns} turns")
    while True:
        turn = bundle.next_turn(conversation)
        if "done" in turn:
            out.print("no match within the turn limit")
            return
        if "ask" in turn:
            reply = typer.prompt(f"turn {conversation.turn + 1}: do you want "
                                 f"'{turn['ask']['name']}'? [y/n/q]").strip().lower()
            if reply.startswith("q"):
                return
            bundle.apply(conversation, turn, {"answer": "yes" if reply.startswith("y")
                                              else "no"})
            continue
        listed = turn["recommend"]
        if not listed:
            out.print("no candidate item left")
            return
        for number, row in enumerate(listed, 1):
            out.print(f"  {number:2d}. item {row['item_id']}  ({row['reason']})",
                      highlight=False)
        reply = typer.prompt(f"turn {conversation.turn + 1}: number to accept, r to reject, "
                             "q to quit").strip().lower()
        if reply.startswith("q"):
            return
        if reply.isdigit() and 1 <= int(reply) <= len(listed):
            out.print(f"accepted item {listed[int(reply) - 1]['item_id']} after "
                      f"{conversation.turn + 1} turns")
            return
        bundle.apply(conversation, turn, {"reject": True})


@app.command("import-events")
def import_events(
    config: Annotated[Path, typer.Argument(help="experiment TOML whose [data] to import")],
    db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the service database (default: $USERLENS_HOME/events.db)")
    ] = None,
) -> None:
    """Load a dataset's events (with their types) into a service database, so its users are
    served at once. Importing the same log again adds nothing."""
    from userlens.config import load_config
    from userlens.pipeline import load_events_for_serving
    from userlens.serving.bulk import import_dataset
    from userlens.serving.settings import default_home
    from userlens.serving.storage import Storage

    home = Path(os.environ["USERLENS_HOME"]) if os.environ.get("USERLENS_HOME") \
        else default_home()
    if db is None:
        home.mkdir(parents=True, exist_ok=True)
    url = db or f"sqlite:///{home.resolve() / 'events.db'}"
    try:
        experiment = load_config(config)
        dataset = load_events_for_serving(experiment.data, mirror=_mirror(),
                                          data_home=_data_home())
        storage = Storage(url)
    except _user_errors() as error:
        _fail(str(error))
    err.print(f"events database: {url}", highlight=False)
    with Progress(TextColumn("import events"), BarColumn(), TextColumn("{task.completed:,}"),
                  TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("events", total=len(dataset.interactions))
        written, existing = import_dataset(
            storage, dataset, progress=lambda done, total: bar.update(task, completed=done))
    out.print(f"{written:,} events imported into {url}"
              + (f" ({existing:,} were there already)" if existing else ""))


@datasets_app.command("list")
def datasets_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered datasets with size, licence and homepage."""
    from userlens.data.datasets import REGISTRY, resolve

    rows = []
    for info in REGISTRY.values():
        try:
            local = str(resolve(info.name, mirror=_mirror(), data_home=_data_home())[0])
        except FileNotFoundError:
            local = None
        rows.append({"name": info.name, "size": info.size, "licence": info.licence,
                     "homepage": info.homepage, "local": local})
    if json_output:
        print(json.dumps(rows))
        return
    table = Table(title="datasets")
    for column in ("name", "size", "licence", "homepage", "local"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c] or "-") for c in ("name", "size", "licence", "homepage",
                                                     "local")))
    out.print(table)


@datasets_app.command("fetch")
def datasets_fetch(name: str) -> None:
    """Download a dataset from its official home (or use the mirror), checksum-verified."""
    from userlens.data.datasets import fetch

    with Progress(TextColumn(f"fetch {name}"), BarColumn(), DownloadColumn(),
                  console=err) as bar:
        task = bar.add_task(name, total=None)
        try:
            path = fetch(name, data_home=_data_home(), mirror=_mirror(),
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total or None))
        except _user_errors() + (OSError,) as error:
            _fail(str(error).strip("'\""))
    out.print(f"{name}: {path}")


def _register_profiles() -> None:
    from userlens.cli.profiles import profile_command, profiles_app

    app.command("profile")(profile_command)
    app.add_typer(profiles_app, name="profiles")


_register_profiles()


def _register_audits() -> None:
    from userlens.cli.audit import audit_app

    app.add_typer(audit_app, name="audit")


_register_audits()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    sys.exit(main())
