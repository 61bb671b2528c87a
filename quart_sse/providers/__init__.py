"""Model backends chosen by ``MODEL_PROVIDER``, imported lazily."""

from __future__ import annotations

from quart_sse.config import ConfigError, Settings
from quart_sse.providers.base import FinishReason, LastPiece, Provider, ProviderError

__all__ = ["FinishReason", "LastPiece", "Provider", "ProviderError", "create_provider"]


def create_provider(settings: Settings) -> Provider:
    """The backend ``MODEL_PROVIDER`` names (``Settings.check()`` has vetted its settings)."""
    if settings.model_provider == "simulated":
        from quart_sse.providers.simulated import SimulatedProvider

        return SimulatedProvider(settings.sim_response_chunks, settings.sim_chunk_delay_ms)
    if settings.model_provider == "gemini" and settings.gemini_api_key:
        from quart_sse.providers.gemini import GeminiProvider
        from quart_sse.providers.retry import RetryPolicy

        return GeminiProvider(
            settings.gemini_api_key,
            settings.genai_model_id,
            base_url=settings.gemini_base_url,
            system_prompt=settings.system_prompt,
            policy=RetryPolicy.from_settings(settings),
            show_text=settings.log_message_text,
        )
    if settings.model_provider == "openai" and settings.openai_base_url:
        from quart_sse.providers.openai import OpenAIProvider
        from quart_sse.providers.retry import RetryPolicy

        return OpenAIProvider(
            settings.openai_base_url,
            settings.openai_model,
            api_key=settings.openai_api_key,
            system_prompt=settings.system_prompt,
            policy=RetryPolicy.from_settings(settings),
            show_text=settings.log_message_text,
        )
    settings.check()  # says what is missing
    raise ConfigError(f"MODEL_PROVIDER={settings.model_provider}: unknown model backend")
