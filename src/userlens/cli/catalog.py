"""``userlens describe``, ``userlens datasets list|fetch`` and ``userlens models [show]``: what
data and models there are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from userlens.cli.common import data_home_path, err, fail, mirror_path, out, user_errors

datasets_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Public datasets: list and fetch.")
models_app = typer.Typer(invoke_without_command=True, rich_markup_mode=None,
                         help="The models userlens can train, and their parameters.")


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

            dataset = load_data(load_config(data).data, mirror=mirror_path(),
                                data_home=data_home_path())
            path = Path(data)
        elif data in REGISTRY:
            from userlens.pipeline import read_registered

            path = resolve(data, mirror=mirror_path(), data_home=data_home_path())[0]
            dataset = read_registered(data, mirror=mirror_path(), data_home=data_home_path(),
                                      columns=column_map)
        else:
            path = Path(data)
            dataset = read(path, format, column_map or ColumnMap())
        if min_item_interactions or min_user_interactions:
            dataset = filters.k_core(dataset, min_user_interactions, min_item_interactions)
    except user_errors() as error:
        fail(str(error).strip("'\""))
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
        fail(f"unknown model '{name}'; known models: {', '.join(MODEL_NAMES)}")
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


@datasets_app.command("list")
def datasets_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered datasets with size, licence and homepage."""
    from userlens.data.datasets import REGISTRY, resolve

    rows = []
    for info in REGISTRY.values():
        try:
            local = str(resolve(info.name, mirror=mirror_path(), data_home=data_home_path())[0])
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
            path = fetch(name, data_home=data_home_path(), mirror=mirror_path(),
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total or None))
        except user_errors() + (OSError,) as error:
            fail(str(error).strip("'\""))
    out.print(f"{name}: {path}")
