"""Settings read once from an environment mapping, under API.md's names, with typed casts.

Every other module reads ``settings.heartbeat_interval`` and friends; nothing else looks at
``os.environ``.  A bad value stops the server at start with one line:
``HEARTBEAT_INTERVAL has value 'abc': not a number``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

PROVIDERS = ("simulated", "gemini", "openai")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """A setting that cannot be used; its message is one line meant for people."""


def _number(kind: type[T], *, minimum: float | None = None) -> Callable[[str, str], T]:
    def cast(name: str, raw: str) -> T:
        try:
            value = kind(raw.strip())  # type: ignore[call-arg]
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{name} has value {raw!r}: not {what}") from None
        if minimum is not None and value < minimum:  # type: ignore[operator]
            raise ConfigError(f"{name} has value {raw!r}: must be at least {minimum:g}")
        return value

    return cast


def _words(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def cast(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ConfigError(f"{name} has value {raw!r}: expected one of {', '.join(options)}")
        return value

    return cast


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told, with API.md's defaults."""

    port: int = 8000
    model_provider: str = "simulated"
    genai_model_id: str = "gemini-2.0-flash"
    gemini_api_key: str | None = field(default=None, repr=False)
    gemini_base_url: str | None = None
    system_prompt: str | None = None
    model_timeout: float = 60.0
    model_retries: int = 3
    model_retry_delay: float = 1.0
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_model: str | None = None
    redis_url: str | None = field(default=None, repr=False)
    heartbeat_interval: float = 15.0
    stream_retention: float = 600.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    sse_retry_ms: int = 2000
    max_message_chars: int = 32000
    max_body_bytes: int = 1_048_576
    max_streams: int = 10_000
    sim_chunk_delay_ms: float = 40.0
    sim_response_chunks: int = 30
    session_ttl: float | None = None
    shutdown_grace: float = 25.0
    web_concurrency: int = 1
    log_level: str = "info"
    send_timeout: float = 30.0
    rate_limit: int | None = None
    max_streams_per_client: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()

    @property
    def model_name(self) -> str:
        """The model id the server reports (in session_info, /health, the banner)."""
        if self.model_provider == "gemini":
            return self.genai_model_id
        if self.model_provider == "openai":
            return self.openai_model or "default"
        return "simulated"

    @property
    def store_name(self) -> str:
        return "redis" if self.redis_url else "memory"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def read(name: str, attr: str, cast: Callable[[str, str], object]) -> None:
            raw = env.get(name)
            if raw is not None and raw.strip() != "":
                values[attr] = cast(name, raw)

        nonneg = _number(float, minimum=0)
        positive_int = _number(int, minimum=1)
        read("PORT", "port", _number(int, minimum=0))
        read("GENAI_MODEL_ID", "genai_model_id", _text)
        read("GEMINI_BASE_URL", "gemini_base_url", _text)
        read("SYSTEM_PROMPT", "system_prompt", _text)
        read("MODEL_TIMEOUT", "model_timeout", _number(float, minimum=0.001))
        read("MODEL_RETRIES", "model_retries", _number(int, minimum=0))
        read("MODEL_RETRY_DELAY", "model_retry_delay", nonneg)
        read("OPENAI_BASE_URL", "openai_base_url", _text)
        read("OPENAI_API_KEY", "openai_api_key", _text)
        read("OPENAI_MODEL", "openai_model", _text)
        read("REDIS_URL", "redis_url", _text)
        read("HEARTBEAT_INTERVAL", "heartbeat_interval", _number(float, minimum=0.01))
        read("STREAM_RETENTION", "stream_retention", nonneg)
        read("API_KEYS", "api_keys", _words)
        read("SSE_RETRY_MS", "sse_retry_ms", _number(int, minimum=0))
        read("MAX_MESSAGE_CHARS", "max_message_chars", positive_int)
        read("MAX_BODY_BYTES", "max_body_bytes", positive_int)
        read("MAX_STREAMS", "max_streams", positive_int)
        read("SIM_CHUNK_DELAY_MS", "sim_chunk_delay_ms", nonneg)
        read("SIM_RESPONSE_CHUNKS", "sim_response_chunks", positive_int)
        read("SESSION_TTL", "session_ttl", _number(float, minimum=1))
        read("SHUTDOWN_GRACE", "shutdown_grace", nonneg)
        read("WEB_CONCURRENCY", "web_concurrency", positive_int)
        read("LOG_LEVEL", "log_level", _choice(LOG_LEVELS))
        read("SEND_TIMEOUT", "send_timeout", _number(float, minimum=0.1))
        read("RATE_LIMIT", "rate_limit", positive_int)
        read("MAX_STREAMS_PER_CLIENT", "max_streams_per_client", positive_int)
        read("TRUSTED_PROXIES", "trusted_proxies", _words)
        read("CORS_ORIGINS", "cors_origins", _words)

        # GOOGLE_API_KEY wins over GEMINI_API_KEY, as in the google-genai SDK.
        key = (env.get("GOOGLE_API_KEY") or "").strip() or (env.get("GEMINI_API_KEY") or "").strip()
        if key:
            values["gemini_api_key"] = key
        provider = (env.get("MODEL_PROVIDER") or "").strip()
        if provider:
            values["model_provider"] = _choice(PROVIDERS)("MODEL_PROVIDER", provider)
        else:
            values["model_provider"] = "gemini" if key else "simulated"

        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that cannot work, each with a one-line reason."""
        if self.model_provider == "gemini" and not self.gemini_api_key:
            raise ConfigError("MODEL_PROVIDER=gemini needs GEMINI_API_KEY or GOOGLE_API_KEY")
        if self.model_provider == "openai" and not self.openai_base_url:
            raise ConfigError("MODEL_PROVIDER=openai needs OPENAI_BASE_URL (e.g. http://localhost:11434/v1)")
        name, url = {
            "gemini": ("GEMINI_BASE_URL", self.gemini_base_url),
            "openai": ("OPENAI_BASE_URL", self.openai_base_url),
        }.get(self.model_provider, ("", None))
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise ConfigError(f"{name} has value {url!r}: expected an http:// or https:// URL")
        if self.web_concurrency > 1 and not self.redis_url:
            raise ConfigError(
                f"WEB_CONCURRENCY={self.web_concurrency} needs REDIS_URL: with the memory store "
                "each worker would have its own sessions and streams"
            )
