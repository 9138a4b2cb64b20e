"""``userlens serve``, ``userlens converse`` and ``userlens import-events``: the service and
its database from the terminal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from userlens.cli.common import data_home_path, err, fail, mirror_path, out, user_errors


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
            fail(refusal)
        storage = Storage(settings.database_url())  # migrations run once, here
        engine = load_engine(artefact, settings)
        if settings.conversation is not None:
            from userlens.conversation.bundle import ConversationBundle

            ConversationBundle.load(settings.conversation)  # fail here, with one clear line
    except (ArtefactError, KeyFileError, OSError, ValueError, ValidationError) as error:
        fail(str(error))
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
        fail(str(error))
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
        dataset = load_events_for_serving(experiment.data, mirror=mirror_path(),
                                          data_home=data_home_path())
        storage = Storage(url)
    except user_errors() as error:
        fail(str(error))
    err.print(f"events database: {url}", highlight=False)
    with Progress(TextColumn("import events"), BarColumn(), TextColumn("{task.completed:,}"),
                  TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("events", total=len(dataset.interactions))
        written, existing = import_dataset(
            storage, dataset, progress=lambda done, total: bar.update(task, completed=done))
    out.print(f"{written:,} events imported into {url}"
              + (f" ({existing:,} were there already)" if existing else ""))
