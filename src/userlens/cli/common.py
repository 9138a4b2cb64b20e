"""What every ``userlens`` command shares: the consoles, the one-line error exit, where data
lives and which errors are the user's (shown as one line, not a traceback)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)
# When piped (CI logs, files) render at the 100 columns tables are laid out for, not 80.
out = Console() if sys.stdout.isatty() else Console(width=100)


def mirror_path() -> Path | None:
    """USERLENS_DATA_MIRROR, else a shared/data folder beside this checkout (found upward
    from the working directory)."""
    from userlens.data.datasets import find_mirror

    value = os.environ.get("USERLENS_DATA_MIRROR")
    return Path(value) if value else find_mirror()


def data_home_path() -> Path:
    from userlens.data.datasets import DEFAULT_DATA_HOME

    value = os.environ.get("USERLENS_DATA_HOME")
    return Path(value) if value else DEFAULT_DATA_HOME


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def user_errors() -> tuple[type[BaseException], ...]:
    from userlens.config import ConfigError
    from userlens.data.filters import EmptyDatasetError
    from userlens.data.readers import DataFormatError
    from userlens.data.splits import LeakageError

    return (ConfigError, DataFormatError, EmptyDatasetError, LeakageError, FileNotFoundError,
            KeyError, ValueError, MemoryError)
