"""Load tests of a quart-sse server: ``locust -f loadtest/locustfile.py --host URL``.

See loadtest/README.md for the users, the options and what each figure means.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from anywhere: the suite imports the project's parser and offline model.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from locust import events  # noqa: E402

from loadtest import hooks  # noqa: E402
from loadtest.users import BurstUser, ChatterUser, IdleListener, ReconnectingUser  # noqa: E402

__all__ = ["BurstUser", "ChatterUser", "IdleListener", "ReconnectingUser"]

hooks.register(events)
