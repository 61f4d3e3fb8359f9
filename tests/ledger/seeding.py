"""One seed per run for every random choice in tests/ledger (GL_SEED=... replays a run)."""

from __future__ import annotations

import os
import random

SEED = int(os.environ.get("GL_SEED", random.SystemRandom().randrange(1 << 30)))
