"""Progress of long runs over many stacks: done/total, the current rate and the time left.

On a terminal one line on stderr is rewritten in place; under CI (`CI` set) or into a file or pipe, a plain
line at most every `interval` seconds and one at the end, so logs stay short.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from typing import Callable, TextIO


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class Meter:
    def __init__(self, stream: TextIO | None = None, *, what: str = "stacks", verb: str = "planned",
                 live: bool | None = None, interval: float = 10.0, window: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)()) and not os.environ.get("CI")
        self.live = live
        self.what, self.verb = what, verb
        self.interval, self.window, self.clock = interval, window, clock
        self.total = self.done = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._last_write = float("-inf")
        self._started = 0.0
        self._width = 0

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self._started = self.clock()
        self._samples = deque([(self._started, 0)])
        self._last_write = float("-inf") if self.live else self._started   # quiet lines: the first after `interval`

    def rate(self) -> float | None:
        """Stacks per second over the last `window` seconds (None until one is done)."""
        if self.done == 0 or len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def line(self) -> str:
        pct = 100 * self.done // self.total if self.total else 100
        head = f"{self.verb} {self.done:,}/{self.total:,} {self.what} ({pct}%)"
        rate = self.rate()
        if self.done >= self.total:
            return f"{head} in {duration(self.clock() - self._started)}"
        if rate is None or rate <= 0:
            return f"{head}, estimating the time left"
        return f"{head}, {rate:.1f} {self.what}/s, about {duration((self.total - self.done) / rate)} left"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        if self.live:
            if now - self._last_write >= 0.1:
                self._write_live()
                self._last_write = now
        elif now - self._last_write >= self.interval and self.done < self.total:
            print(self.line(), file=self.stream, flush=True)
            self._last_write = now

    def say(self, message: str) -> None:
        """A message line; on a terminal the progress line is redrawn below it."""
        if self.live and self._width:
            self.stream.write("\r" + message.ljust(self._width) + "\n")
            self._write_live()
        else:
            print(message, file=self.stream, flush=True)

    def _write_live(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.live:
            self._write_live()
            self.stream.write("\n")
            self.stream.flush()
        else:
            print(self.line(), file=self.stream, flush=True)
