"""userlens: learn who each user is from what they did.

For notebooks::

    import userlens
    config = userlens.load_config("configs/ml-100k-baselines.toml")
    report = userlens.run(config)                      # or userlens.run(config, data=df)
    artefact = userlens.load_artefact("runs/ml-100k-baselines/ease")
    artefact.recommend(["50", "172", "133"], k=10)     # polars DataFrame: item_id, score
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from userlens.artefact import Artefact
    from userlens.config import ExperimentConfig

__all__ = ["__version__", "load_artefact", "load_config", "run"]


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate a TOML experiment config (see :mod:`userlens.config`)."""
    from userlens.config import load_config as load

    return load(path)


def run(config: ExperimentConfig | str | Path | dict[str, Any], *, data: Any = None,
        out: str | Path | None = None) -> dict:
    """Read, filter, split, fit, evaluate and write artefacts; returns the report dict.

    Args:
        config: a loaded config, a TOML path, or the config as a dict.
        data: a polars or pandas DataFrame of events instead of the config's data source
            (its columns named by ``[data.columns]``).
        out: the run folder (default ``runs/<name>``).
    """
    from userlens.config import ExperimentConfig, validate_config
    from userlens.config import load_config as load
    from userlens.evaluation.experiment import run_experiment

    if isinstance(config, str | Path):
        config = load(config)
    elif isinstance(config, dict):
        config = validate_config(config, folder=Path.cwd())
    elif not isinstance(config, ExperimentConfig):
        raise TypeError(f"config: expected a path, a dict or an ExperimentConfig, got "
                        f"{type(config).__name__}")
    target = Path(out) if out is not None else Path("runs") / config.name
    return run_experiment(config, target, frame=data)


def load_artefact(path: str | Path) -> Artefact:
    """Load an artefact folder written by ``userlens run`` (no training data needed)."""
    from userlens.artefact import read

    return read(path)
