"""Service settings: flags of ``userlens serve`` or ``USERLENS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """Everything the service reads from its environment (prefix ``USERLENS_``)."""

    model_config = SettingsConfigDict(env_prefix="USERLENS_", extra="forbid", frozen=True)

    artefact: Path
    """Artefact directory written by ``userlens run`` (runs/NAME/MODEL)."""
    db: str | None = None
    """SQLAlchemy URL; default: SQLite file ``<artefact>.events.db`` next to the artefact."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    api_key: str | None = None
    """When set, writes and admin routes need ``X-API-Key: <key>`` (or a Bearer token)."""
    max_body_bytes: int = Field(default=2_000_000, gt=0)
    max_events_per_request: int = Field(default=10_000, gt=0)
    max_history: int = Field(default=1000, gt=0)
    """Newest events read per user for non-sequential models (sequential: their max_len)."""
    max_k: int = Field(default=1000, gt=0)
    trending_window_hours: float = Field(default=24.0 * 7, gt=0)
    trending_cache_seconds: float = Field(default=10.0, ge=0)
    ann_min_items: int = Field(default=100_000, gt=0)
    """Catalogues at least this large are served through an HNSW index (embedding models)."""
    ann_kind: Literal["ivf", "hnsw"] = "ivf"
    ann_depth: int | None = Field(default=None, gt=0)
    """IVF lists probed / HNSW efSearch; default: what reached the recall target on the
    1M-item benchmark (see benchmarks/results/ann_1m.json)."""
    torch_threads: int = Field(default=1, gt=0)
    reload_poll_seconds: float = Field(default=2.0, gt=0)
    """How often each worker checks whether another one reloaded the artefact."""

    def database_url(self) -> str:
        if self.db:
            return self.db
        artefact = self.artefact.resolve()
        return f"sqlite:///{artefact.parent / (artefact.name + '.events.db')}"
