"""The one clock of the service: integer milliseconds since the Unix epoch.

The store takes times as arguments (so tests drive them); callers read them here.
"""
from __future__ import annotations

import time


def now_ms() -> int:
    """Now, in whole milliseconds since the Unix epoch (the unit of every stored time)."""
    return int(time.time() * 1000)
