"""How long a user waits after requests that got no response (the server down, starting, restarting).

A refused or broken connection fails at once, so a user with no think time would repeat it
thousands of times a second: a flood against a server that is coming up.  Each user backs off
instead, exponentially with jitter ("equal jitter": half the step, plus up to the other half at
random), capped at :data:`CAP` seconds, and starts over once a response arrives.  Pure: the
random source is a parameter.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BASE = 0.5  # s: the first step
CAP = 5.0  # s: the longest step


def delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` requests in a row got no response (0 for none).

    The step doubles from :data:`BASE` up to :data:`CAP`; the wait is between half the step and
    the whole step (``rand()`` in [0, 1) picks where).  ``failures`` below 1 gives 0.
    """
    if failures < 1:
        return 0.0
    step = min(CAP, BASE * 2.0 ** min(failures - 1, 32))
    return step / 2 + step / 2 * rand()
