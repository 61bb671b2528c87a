"""Settings read once from an environment mapping, under docs/API.md's names, with typed casts.

Each setting is named once: a field of :class:`Settings`, whose metadata holds its cast.
Its environment variable is the field's name in upper case, unless the field lists its
own names (first one set wins).  Every other module reads ``settings.heartbeat_interval``
and friends; nothing else looks at ``os.environ``.  A bad value stops the server at start
with one line: ``HEARTBEAT_INTERVAL has value 'abc': not a number``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
Cast = Callable[[str, str], object]

PROVIDERS = ("simulated", "gemini", "openai")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
LOG_ACCESS = ("auto", "on", "off")

# Read by the google-genai SDK itself when GEMINI_BASE_URL is unset; listed so that callers
# (the test servers' scrubbed environment) know it configures the server too.
READ_BY_SDK = ("GOOGLE_GEMINI_BASE_URL",)


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


def _setting(default: Any, cast: Cast, *, env: tuple[str, ...] = (), secret: bool = False) -> Any:
    """A field read by ``cast`` from the variable named after it, or from ``env``'s names."""
    return field(default=default, repr=not secret, metadata={"cast": cast, "env": env})


def _names(setting: Field[Any]) -> tuple[str, ...]:
    return setting.metadata["env"] or (setting.name.upper(),)


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} has value {raw!r}: expected 1 or 0 (true or false)")


def _keys(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated bearer keys; a value with no key in it (``,``) would leave the server open."""
    keys = _words(name, raw)
    if not keys:
        raise ConfigError(f"{name} is set but holds no key: give comma-separated keys, or unset it")
    for number, key in enumerate(keys, 1):
        # A header value is read as Latin-1 bytes, a query string as UTF-8: a key outside
        # printable ASCII would work in one and not the other (RFC 9110 §5.5, RFC 6750 §2.1).
        if not all("!" <= char <= "~" for char in key):
            raise ConfigError(
                f"{name}: key {number} has a space or a character outside printable ASCII, which "
                "an Authorization header cannot carry as sent: use letters, digits and punctuation"
            )
    return keys


def _switch(name: str, raw: str) -> str:
    """``auto``, ``on`` or ``off``; 1/true/yes read as on, 0/false/no as off."""
    value = raw.strip().lower()
    value = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(value, value)
    if value not in LOG_ACCESS:
        raise ConfigError(f"{name} has value {raw!r}: expected auto, on or off (1 or 0)")
    return value


_nonneg = _number(float, minimum=0)
_positive_int = _number(int, minimum=1)


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told, with docs/API.md's defaults."""

    port: int = _setting(8000, _number(int, minimum=0))
    # Unset: gemini when a key is set, else simulated (see from_env).
    model_provider: str = _setting("simulated", _choice(PROVIDERS))
    genai_model_id: str = _setting("gemini-2.0-flash", _text)
    # GOOGLE_API_KEY wins over GEMINI_API_KEY, as in the google-genai SDK.
    gemini_api_key: str | None = _setting(None, _text, env=("GOOGLE_API_KEY", "GEMINI_API_KEY"), secret=True)
    gemini_base_url: str | None = _setting(None, _text)
    system_prompt: str | None = _setting(None, _text)
    model_timeout: float = _setting(60.0, _number(float, minimum=0.001))
    model_retries: int = _setting(3, _number(int, minimum=0))
    model_retry_delay: float = _setting(1.0, _nonneg)
    openai_base_url: str | None = _setting(None, _text)
    openai_api_key: str | None = _setting(None, _text, secret=True)
    openai_model: str | None = _setting(None, _text)
    redis_url: str | None = _setting(None, _text, secret=True)
    heartbeat_interval: float = _setting(15.0, _number(float, minimum=0.01))
    stream_retention: float = _setting(600.0, _nonneg)
    api_keys: tuple[str, ...] = _setting((), _keys, secret=True)
    sse_retry_ms: int = _setting(2000, _number(int, minimum=0))
    max_message_chars: int = _setting(32000, _positive_int)
    max_body_bytes: int = _setting(1_048_576, _positive_int)
    max_streams: int = _setting(10_000, _positive_int)
    sim_chunk_delay_ms: float = _setting(40.0, _nonneg)
    sim_response_chunks: int = _setting(30, _positive_int)
    session_ttl: float | None = _setting(None, _number(float, minimum=1))
    shutdown_grace: float = _setting(25.0, _nonneg)
    web_concurrency: int = _setting(1, _positive_int)
    log_level: str = _setting("info", _choice(LOG_LEVELS))
    send_timeout: float = _setting(30.0, _number(float, minimum=0.1))
    rate_limit: int | None = _setting(None, _positive_int)
    max_streams_per_client: int | None = _setting(None, _positive_int)
    trusted_proxies: tuple[str, ...] = _setting((), _words)
    cors_origins: tuple[str, ...] = _setting((), _words)
    admin_keys: tuple[str, ...] = _setting((), _keys, secret=True)
    owner_id_secret: str | None = _setting(None, _text, secret=True)
    log_message_text: bool = _setting(False, _flag)
    # text: Rich on a terminal, plain lines elsewhere; json: one JSON object per line (console.py).
    log_format: str = _setting("text", _choice(LOG_FORMATS))
    # auto: an access line per request when stdout is not a terminal, or with LOG_FORMAT=json.
    log_access: str = _setting("auto", _switch)
    redis_timeout: float = _setting(2.0, _number(float, minimum=0.05))
    body_timeout: float = _setting(60.0, _number(float, minimum=0.1))
    max_session_messages: int = _setting(1000, _number(int, minimum=2))
    context_max_chars: int = _setting(200_000, _positive_int)
    # Durable Streams (/v1/stream/): seconds a long-poll read waits for data before its 204.
    durable_long_poll_timeout: float = _setting(20.0, _number(float, minimum=0.05))
    # Bytes of records one durable stream holds at most: an append past it is refused (413).
    durable_max_stream_bytes: int = _setting(64 << 20, _positive_int)
    # Durable streams one owner (API key, else client address) holds at most: 429 past it.
    durable_max_streams_per_owner: int = _setting(1000, _positive_int)
    # Durable streams the store holds at most, every owner's: 507 past it.
    durable_max_streams: int = _setting(100_000, _positive_int)
    # Bytes of records the memory store holds at most, every stream's: 507 past it (on
    # Redis its own maxmemory bounds them).
    durable_max_bytes: int = _setting(1 << 30, _positive_int)
    # Seconds between two sweeps of expired durable streams (Stream-TTL, Stream-Expires-At).
    durable_sweep_interval: float = _setting(10.0, _number(float, minimum=0.05))

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
    def environment_names(cls) -> tuple[str, ...]:
        """Every environment variable that configures the server, the SDK's own included."""
        return (*(name for setting in fields(cls) for name in _names(setting)), *READ_BY_SDK)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for setting in fields(cls):
            for name in _names(setting):
                raw = env.get(name)
                # A key list set to blanks is not unset: it would leave the server open.
                if raw is not None and (
                    raw.strip() != "" or (raw != "" and setting.metadata["cast"] is _keys)
                ):
                    values[setting.name] = setting.metadata["cast"](name, raw)
                    break
        if "model_provider" not in values:
            values["model_provider"] = "gemini" if values.get("gemini_api_key") else "simulated"
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

    def workers(self, asked: int | None = None, asked_by: str = "WEB_CONCURRENCY") -> tuple[int, str | None]:
        """The worker processes to start, and why fewer than asked for (one line), or None.

        ``asked`` is the count asked for (default ``WEB_CONCURRENCY``), ``asked_by`` what asked
        for it (``WEB_CONCURRENCY``, ``--workers``).  The memory store lives in each process,
        so without ``REDIS_URL`` one worker runs whatever was asked: several would each keep
        their own sessions and streams.  Heroku sets ``WEB_CONCURRENCY`` to 2 or more by itself.
        """
        count = self.web_concurrency if asked is None else asked
        if count <= 1 or self.redis_url:
            return count, None
        setting = f"{asked_by} {count}" if asked_by.startswith("-") else f"{asked_by}={count}"
        return 1, (
            f"{setting} asks for {count} workers, but the memory store is per process (sessions and "
            f"streams would not be shared between workers): starting 1; set REDIS_URL to run {count}"
        )
