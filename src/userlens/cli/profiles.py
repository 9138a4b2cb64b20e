"""``userlens profile`` (one user, a readable panel) and ``userlens profiles export``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from userlens.cli.common import data_home_path, err, fail, mirror_path, out, user_errors

profiles_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Profiles of every user of a dataset.")

BAR_WIDTH = 24


def _bar(share: float, width: int = BAR_WIDTH) -> str:
    filled = int(round(max(0.0, min(1.0, share)) * width))
    return "█" * filled + "·" * (width - filled)


def render(profile, titles: dict[str, str]) -> Panel:
    """A profile as a rich panel: summary, interests with bars, clusters, behaviour."""
    parts: list = [Text(profile.summary.text, style="bold")]
    if profile.interests:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        for column in ("interest", "share", "", "lift", "evidence"):
            table.add_column(column, justify="right" if column in ("share", "lift") else "left")
        for interest in profile.interests[:8]:
            flag = " (muted)" if interest.muted else (f" (boost x{interest.boost:g})"
                                                      if interest.boost else "")
            shown = ", ".join(titles.get(i, i) for i in interest.evidence[:2])
            table.add_row(f"{interest.field}:{interest.value}{flag}", f"{interest.share:.0%}",
                          _bar(interest.share), f"{interest.lift:.2f}x", shown)
        parts += [Text(""), Text("Interests", style="bold underline"), table]
    if profile.clusters:
        parts += [Text(""), Text(f"Interest clusters ({profile.cluster_source} vectors)",
                                 style="bold underline")]
        for cluster in profile.clusters:
            parts.append(Text(f"{_bar(cluster.weight, 12)} {cluster.explanation}"))
    b = profile.behaviour
    rows = Table(box=None, show_header=False, pad_edge=False)
    rows.add_column(style="dim")
    rows.add_column()
    for name in type(b).model_fields:
        measure = getattr(b, name)
        if name in ("hour_of_day", "day_of_week") or measure.value is None:
            continue
        rows.add_row(name.replace("_", " "), measure.explanation)
    parts += [Text(""), Text("Behaviour", style="bold underline"), rows]
    if b.hour_of_day:
        peak = max(b.hour_of_day) or 1
        blocks = " ▁▂▃▄▅▆▇█"
        spark = "".join(blocks[int(round(8 * v / peak))] for v in b.hour_of_day)
        parts.append(Text(f"hour of day (UTC 0-23)  {spark}"))
    c = profile.controls
    if c.mute or c.boost or c.forgotten:
        parts += [Text(""), Text(f"Controls: mute {c.mute or '-'}, boost {c.boost or '-'}, "
                                 f"{c.forgotten} events forgotten")]
    return Panel(Group(*parts), title=f"user {profile.user_id}",
                 subtitle=f"profile {profile.version} · summary: {profile.summary.source}")


def profile_command(
    artefact: Annotated[Path, typer.Argument(help="artefact dir (runs/NAME/MODEL)")],
    user_id: Annotated[str, typer.Argument(help="the user, as stored in the events database")],
    db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the events database (default: $USERLENS_HOME/events.db)")
    ] = None,
    summary: Annotated[str, typer.Option(
        help="template (deterministic) or llm ([llm] endpoint via USERLENS_LLM_BASE_URL, "
             "else the embedded model)")] = "template",
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one user's profile from their stored events (fill the database with
    `userlens import-events CONFIG` or through the API)."""
    from userlens.llm import LLMError
    from userlens.profiles.llm_summary import summarise
    from userlens.serving.engine import ArtefactError
    from userlens.serving.profiles import Profiles, UnknownUser
    from userlens.serving.service import Service, load_engine
    from userlens.serving.settings import ServeSettings
    from userlens.serving.storage import Storage

    if summary not in ("template", "llm"):
        fail(f"--summary must be template or llm, not {summary!r}")
    try:
        settings = ServeSettings(artefact=artefact, **({"db": db} if db else {}))
        storage = Storage(settings.database_url())
        engine = load_engine(artefact, settings)
    except (ArtefactError, OSError, ValueError) as error:
        fail(str(error))
    profiles = Profiles(Service(engine, storage, settings))
    try:
        found = profiles.profile(user_id)
    except UnknownUser:
        fail(f"no events or controls stored for user {user_id!r} in {storage.url} "
              "(import them with `userlens import-events CONFIG`)")
    if summary == "llm":
        try:
            written = summarise(found, engine.population, profiles.client(),
                                item_noun=settings.item_noun)
        except LLMError as error:
            fail(str(error))
        found = found.model_copy(update={"summary": written.summary})
        if written.rejected:
            err.print(f"the LLM summary was unfaithful ({', '.join(written.check.unsupported)})"
                      "; showing the template", highlight=False)
    if json_output:
        print(found.model_dump_json(indent=2))
        return
    population = engine.population
    ids = {i for interest in found.interests[:8] for i in interest.evidence[:2]}
    titles = {i: population.title(population.items.index_of(i)) for i in ids
              if population.items.index_of(i) is not None}
    out.print(render(found, titles))


@profiles_app.command("export")
def export_command(
    config: Annotated[Path, typer.Argument(help="experiment TOML whose [data] to profile")],
    out_file: Annotated[Path, typer.Option("--out", help="Parquet file to write")],
    json_output: Annotated[bool, typer.Option("--json")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="processes building profiles (default: one per core; "
                                 "LLM summaries: one)")] = None,
) -> None:
    """Write every user's profile of the config's data to Parquet: one row per user
    (user_id, version, interests, clusters, behaviour, summary_text, ...)."""
    from userlens.config import load_config
    from userlens.llm import LLMError, api_key, connect
    from userlens.pipeline import load_data
    from userlens.profiles.export import export

    try:
        experiment = load_config(config)
        dataset = load_data(experiment.data, mirror=mirror_path(), data_home=data_home_path())
        settings = experiment.profiles
        llm = (connect(experiment.llm, api_key=api_key(experiment.llm, dict(os.environ)))
               if settings.summary == "llm" else None)
    except (*user_errors(), LLMError) as error:
        fail(str(error))
    with Progress(TextColumn("profiles"), BarColumn(), TextColumn("{task.completed:,}/"
                                                                   "{task.total:,}"),
                  TimeElapsedColumn(), console=err, disable=json_output) as bar:
        task = bar.add_task("profiles", total=dataset.interactions.n_users)
        n, seconds = export(dataset, out_file, fields=settings.fields, llm=llm,
                            item_noun=settings.item_noun, max_evidence=settings.max_evidence,
                            workers=workers or os.cpu_count() or 1,
                            progress=lambda done, total: bar.update(task, completed=done,
                                                                    total=total))
    if json_output:
        print(json.dumps({"users": n, "seconds": round(seconds, 2), "out": str(out_file)}))
    else:
        out.print(f"{n:,} profiles written to {out_file} in {seconds:.1f} s")

