"""Service settings: flags of ``userlens serve`` or ``USERLENS_*`` environment variables.

Secrets never come from flags (argv is visible to every user of the machine in ``ps``):
``USERLENS_API_KEY`` is one key with every scope, ``USERLENS_API_KEYS_FILE`` names a file of
``scope:key`` lines (scopes: read, write, admin; ``#`` starts a comment).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from userlens.audits.rerank import parse as parse_rerank

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")


def default_home() -> Path:
    """The platform's per-user data folder for userlens (e.g. ~/.local/share/userlens)."""
    return Path(platformdirs.user_data_dir("userlens", appauthor=False))


class KeyFileError(ValueError):
    """The API keys file is unreadable or has a malformed line (named, never echoed)."""


def read_keys_file(path: Path) -> list[tuple[Scope, str]]:
    """``scope:key`` lines -> [(scope, key)]; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text()
    except OSError as error:
        raise KeyFileError(f"API keys file {path}: cannot be read ({error.strerror})") from None
    keys: list[tuple[Scope, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        scope, sep, key = line.partition(":")
        scope, key = scope.strip(), key.strip()
        if not sep or scope not in SCOPES or not key:
            raise KeyFileError(f"API keys file {path}, line {number}: expected 'scope:key' "
                               f"with scope one of {', '.join(SCOPES)}")
        keys.append((scope, key))  # type: ignore[arg-type]
    return keys


class ServeSettings(BaseSettings):
    """Everything the service reads from its environment (prefix ``USERLENS_``)."""

    model_config = SettingsConfigDict(env_prefix="USERLENS_", extra="forbid", frozen=True)

    artefact: Path
    """Artefact directory written by ``userlens run`` (runs/NAME/MODEL)."""
    home: Path = Field(default_factory=default_home)
    """Where the default event database lives (``USERLENS_HOME``); never inside a run
    folder, so re-running an experiment cannot touch posted events."""
    db: str | None = None
    """SQLAlchemy URL; default: SQLite file ``<home>/events.db``."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    insecure: bool = False
    """Allow binding to a non-loopback address without API keys."""
    api_key: SecretStr | None = None
    """A key with every scope (``USERLENS_API_KEY``)."""
    api_keys_file: Path | None = None
    """A file of ``scope:key`` lines (``USERLENS_API_KEYS_FILE``)."""
    conversation: Path | None = None
    """A ``[conversation]`` run folder (``userlens run configs/crs-lastfm-star.toml``) to
    serve at ``/conversations`` (``USERLENS_CONVERSATION``); unset: no such routes."""
    artefact_root: Path | None = None
    """``/admin/reload`` loads only directories under this folder (default: the served
    artefact's parent folder)."""
    max_artefact_bytes: int = Field(default=16 << 30, gt=0)
    """Cap on the uncompressed arrays of an artefact (checked before decompressing)."""
    max_body_bytes: int = Field(default=2_000_000, gt=0)
    max_events_per_request: int = Field(default=10_000, gt=0)
    max_future_seconds: float = Field(default=300.0, ge=0)
    """Events stamped further than this in the future are rejected."""
    max_history: int = Field(default=1000, gt=0)
    """Newest events read per user for non-sequential models (sequential: their max_len)."""
    history_page: int = Field(default=1000, gt=0)
    """Events per page of ``GET /users/{id}/history`` when no limit is given."""
    max_k: int = Field(default=1000, gt=0)
    trending_window_hours: float = Field(default=24.0 * 7, gt=0)
    trending_cache_seconds: float = Field(default=10.0, ge=0)
    """How often trending is recomputed in the background (0: on every request, for tests)."""
    ann_min_items: int = Field(default=100_000, gt=0)
    """Catalogues at least this large are served through an HNSW index (embedding models)."""
    ann_kind: Literal["ivf", "hnsw"] = "ivf"
    ann_depth: int | None = Field(default=None, gt=0)
    """IVF lists probed / HNSW efSearch; default: what reached the recall target on the
    1M-item benchmark (see benchmarks/results/ann_1m.json)."""
    torch_threads: int = Field(default=1, gt=0)
    reload_poll_seconds: float = Field(default=2.0, gt=0)
    """How often each worker checks whether another one reloaded the artefact."""
    rerank: str | None = None
    """Re-rank personalised recommendations: ``calibrated``, ``mmr`` or ``exposure``, with
    an optional weight (``calibrated:0.5``; see ``userlens audit fairness``)."""
    rerank_candidates: int = Field(default=100, gt=0)
    """How many of the model's best items the re-ranker picks from."""

    @field_validator("rerank")
    @classmethod
    def _known_reranker(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rerank(value)
        return value
    max_profile_events: int = Field(default=10_000, gt=0)
    """Newest events a profile is built from."""
    llm_base_url: str | None = None
    """OpenAI-compatible endpoint for ``?summary=llm`` (``USERLENS_LLM_BASE_URL``); unset:
    the embedded SmolLM2 model, started on the first such request."""
    llm_model: str | None = None
    llm_api_key_env: str | None = None
    """Name of the environment variable with the endpoint's key."""
    item_noun: str = "item"
    """What the items are, for LLM prompts ("movie", "product")."""

    def database_url(self) -> str:
        if self.db:
            return self.db
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home.resolve() / 'events.db'}"

    def reload_root(self) -> Path:
        return (self.artefact_root or self.artefact.resolve().parent).resolve()

    def keys(self) -> list[tuple[Scope, str]]:
        """Every configured (scope, key); the all-scope key counts once per scope."""
        found: list[tuple[Scope, str]] = []
        if self.api_key is not None and self.api_key.get_secret_value():
            found += [(scope, self.api_key.get_secret_value()) for scope in SCOPES]
        if self.api_keys_file is not None:
            found += read_keys_file(self.api_keys_file)
        return found

    def exposed(self) -> bool:
        """Whether ``host`` listens beyond this machine."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True  # a host name: assume it resolves to a reachable interface


class KeyRing:
    """Scoped API keys, compared in constant time."""

    def __init__(self, keys: list[tuple[Scope, str]]) -> None:
        self._keys = [(scope, key.encode()) for scope, key in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def scopes(self, given: str | None) -> set[Scope]:
        """The scopes of a presented key (empty: not a key of this service)."""
        if given is None:
            return set()
        candidate = given.encode()
        found: set[Scope] = set()
        for key_scope, key in self._keys:  # no early exit: time does not depend on which
            if hmac.compare_digest(candidate, key):
                found.add(key_scope)
        return found
