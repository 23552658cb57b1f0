"""Reconnection delays shared by the networked engines and the PostgreSQL outbox relay."""

from __future__ import annotations

import random


class Backoff:
    """Exponential delays with full jitter, reset after a success."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)
