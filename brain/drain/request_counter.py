"""Counting a drain's API requests by kind, so a test (or a metric) can check it stays cheap."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RequestCounter:
    """Counts API requests by kind, so a test (or a metric) can check a drain stays cheap."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def count_request(counter: RequestCounter | None, kind: str) -> None:
    if counter is not None:
        counter.add(kind)
