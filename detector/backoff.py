"""Exponential backoff with jitter, so a fleet of detectors does not stampede a recovering API."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `initial` up to `maximum`, each drawn from its upper half.

    "Equal jitter": delay = d/2 + uniform(0, d/2) where d = min(maximum, initial * 2**n). Never
    shorter than half the nominal delay (no hammering), never longer than `maximum`.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def nominal(self) -> float:
        """The delay before jitter for the current attempt."""
        return min(self.maximum, self.initial * 2.0 ** min(self.attempts, 62))

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        nominal = self.nominal()
        self.attempts += 1
        half = nominal / 2
        return half + self._rng.uniform(0, half)

    def reset(self) -> None:
        self.attempts = 0
