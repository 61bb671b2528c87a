"""Settings: API.md's names and defaults, typed casts, one-line errors."""

from __future__ import annotations

import pytest

from quart_sse.config import ConfigError, Settings


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
        ({"WEB_CONCURRENCY": "2"}, "WEB_CONCURRENCY=2 needs REDIS_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL has value 'loud'"),
    ],
)
def test_bad_settings_fail_in_one_line(env, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
