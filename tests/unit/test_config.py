"""Settings: docs/API.md's names and defaults, typed casts, one-line errors."""

from __future__ import annotations

from dataclasses import fields

import pytest

from quart_sse.config import ConfigError, Settings
from tests.support.server import server_env


def test_defaults_are_api_md_defaults():
    s = Settings.from_env({})
    assert (s.port, s.heartbeat_interval, s.stream_retention, s.sse_retry_ms) == (8000, 15, 600, 2000)
    assert (s.max_message_chars, s.max_body_bytes, s.max_streams) == (32000, 1048576, 10000)
    assert (s.sim_chunk_delay_ms, s.sim_response_chunks, s.shutdown_grace, s.send_timeout) == (40, 30, 25, 30)
    assert s.model_provider == "simulated" and s.model_name == "simulated" and s.store_name == "memory"
    assert s.genai_model_id == "gemini-2.0-flash" and s.model_timeout == 60 and s.log_level == "info"


def test_values_are_read_and_cast():
    s = Settings.from_env(
        {
            "PORT": "9000",
            "HEARTBEAT_INTERVAL": "0.5",
            "API_KEYS": " a, b ,,c ",
            "LOG_LEVEL": "DEBUG",
            "SESSION_TTL": "60",
        }
    )
    assert s.port == 9000 and s.heartbeat_interval == 0.5 and s.api_keys == ("a", "b", "c")
    assert s.log_level == "debug" and s.session_ttl == 60


def test_a_key_selects_gemini_and_google_api_key_wins():
    s = Settings.from_env({"GEMINI_API_KEY": "gem-secret", "GOOGLE_API_KEY": "goo-secret"})
    assert s.model_provider == "gemini" and s.gemini_api_key == "goo-secret"
    assert "secret" not in repr(s)  # keys stay out of reprs and logs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT has value 'eighty': not a whole number"),
        ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL has value '0': must be at least 0.01"),
        ({"MAX_STREAMS": "1.5"}, "MAX_STREAMS has value '1.5': not a whole number"),
        (
            {"MODEL_PROVIDER": "llama"},
            "MODEL_PROVIDER has value 'llama': expected one of simulated, gemini, openai",
        ),
        ({"MODEL_PROVIDER": "gemini"}, "MODEL_PROVIDER=gemini needs GEMINI_API_KEY or GOOGLE_API_KEY"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY has value '0': must be at least 1"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL has value 'loud'"),
        ({"API_KEYS": ","}, "API_KEYS is set but holds no key"),
        ({"ADMIN_KEYS": " , "}, "ADMIN_KEYS is set but holds no key"),
        ({"API_KEYS": " "}, "API_KEYS is set but holds no key"),
        ({"ADMIN_KEYS": "\t"}, "ADMIN_KEYS is set but holds no key"),
        ({"API_KEYS": "good,clé"}, "API_KEYS: key 2 has a space or a character outside printable ASCII"),
        ({"ADMIN_KEYS": "ключ"}, "ADMIN_KEYS: key 1 has a space or a character outside printable ASCII"),
        ({"API_KEYS": "tab\there"}, "API_KEYS: key 1 has a space or a character outside printable ASCII"),
        ({"API_KEYS": "abc, d e"}, "API_KEYS: key 2 has a space or a character outside printable ASCII"),
        ({"LOG_MESSAGE_TEXT": "maybe"}, "LOG_MESSAGE_TEXT has value 'maybe': expected 1 or 0"),
    ],
)
def test_bad_settings_fail_in_one_line(env, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("env", "workers"), [({}, 1), ({"WEB_CONCURRENCY": "1"}, 1)])
def test_one_worker_asked_is_one_worker(env, workers):
    assert Settings.from_env(env).workers() == (workers, None)


def test_several_workers_on_the_memory_store_run_as_one_and_say_why():
    # Heroku sets WEB_CONCURRENCY to 2 or more by itself: the server starts anyway, with one.
    settings = Settings.from_env({"WEB_CONCURRENCY": "2"})
    count, why = settings.workers()
    assert count == 1 and why is not None and "\n" not in why
    assert why.startswith("WEB_CONCURRENCY=2 asks for 2 workers, but the memory store is per process")
    assert why.endswith("starting 1; set REDIS_URL to run 2")
    assert settings.workers(3, "--workers")[1].startswith("--workers 3 asks for 3 workers")  # type: ignore[union-attr]


def test_several_workers_on_redis_run_as_asked():
    settings = Settings.from_env({"WEB_CONCURRENCY": "4", "REDIS_URL": "redis://h"})
    assert settings.workers() == (4, None) and settings.workers(2, "--workers") == (2, None)


# A valid raw value, and what it reads as, for each type of setting (and each choice).
SAMPLES: dict[str, tuple[str, object]] = {
    "int": ("7", 7),
    "int | None": ("7", 7),
    "float": ("7", 7.0),
    "float | None": ("7", 7.0),
    "str": ("some-model", "some-model"),
    "str | None": ("http://h/v1", "http://h/v1"),
    "tuple[str, ...]": ("a, b", ("a", "b")),
    "bool": ("yes", True),
}
CHOICES = {
    "model_provider": ("OpenAI", "openai"),
    "log_level": ("Error", "error"),
    "log_format": ("JSON", "json"),
    "log_access": ("1", "on"),
}


@pytest.mark.parametrize("setting", fields(Settings), ids=lambda f: f.name)
def test_each_setting_is_read_from_each_of_its_variables(setting):
    raw, value = CHOICES.get(setting.name) or SAMPLES[str(setting.type)]
    names = setting.metadata["env"] or (setting.name.upper(),)
    for name in names:
        assert name in Settings.environment_names()
        # MODEL_PROVIDER=openai needs OPENAI_BASE_URL.
        env = {"OPENAI_BASE_URL": "http://h/v1", "REDIS_URL": "redis://h", name: raw}
        assert getattr(Settings.from_env(env), setting.name) == value


def test_environment_names_are_every_setting_and_the_sdks():
    names = Settings.environment_names()
    assert len(names) == len(set(names)) == len(fields(Settings)) + 2  # two key names, the SDK's URL
    assert {"GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "MODEL_PROVIDER"} <= set(names)


def test_test_servers_inherit_no_setting_from_the_shell(monkeypatch):
    for name in Settings.environment_names():
        monkeypatch.setenv(name, "from-the-shell")
    env = server_env()
    assert [name for name in Settings.environment_names() if env.get(name) == "from-the-shell"] == []
