"""Model backends chosen by ``MODEL_PROVIDER``, imported lazily."""

from __future__ import annotations

from quart_sse.config import ConfigError, Settings
from quart_sse.providers.base import FinishReason, LastPiece, Provider, ProviderError

__all__ = ["FinishReason", "LastPiece", "Provider", "ProviderError", "create_provider"]


def create_provider(settings: Settings) -> Provider:
    if settings.model_provider == "simulated":
        from quart_sse.providers.simulated import SimulatedProvider

        return SimulatedProvider(settings.sim_response_chunks, settings.sim_chunk_delay_ms)
    raise ConfigError(
        f"MODEL_PROVIDER={settings.model_provider}: this backend is not built yet (issue 4); "
        "unset the key or set MODEL_PROVIDER=simulated"
    )
