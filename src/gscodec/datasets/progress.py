"""A small stderr progress line: images done, images/s and ETA (no dependencies)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Redraw ``[prefix] done/total img | x img/s | ETA | shards`` on a stream.

    ``total`` may be unknown for some shards (tar inputs are not counted up
    front): ``unknown_shards`` of them are estimated at the mean size of the
    shards finished so far, or at ``unknown_estimate`` before any has
    finished. On a terminal the line is redrawn in place at most every
    ``interval`` seconds; otherwise a full line is printed every
    ``log_interval`` seconds so logs stay readable.
    """

    def __init__(
        self,
        known_images: int,
        unknown_shards: int,
        total_shards: int,
        *,
        unknown_estimate: int | None = None,
        prefix: str = "encode",
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.5,
        log_interval: float = 30.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.prefix = prefix
        self.known_images = known_images
        self.unknown_shards = unknown_shards
        self.total_shards = total_shards
        self.unknown_estimate = unknown_estimate
        self.done_images = 0
        self.done_shards = 0
        self._finished_sizes: list[int] = []
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, images: int) -> None:
        """Count ``images`` more images encoded (or skipped as failed)."""
        self.done_images += images
        self._maybe_draw()

    def shard_done(self, images: int, was_unknown: bool) -> None:
        """Count a finished shard of ``images`` samples."""
        self.done_shards += 1
        if was_unknown:
            self.unknown_shards -= 1
            self.known_images += images
            self._finished_sizes.append(images)
        self._maybe_draw()

    def total(self) -> int | None:
        """Estimated total images (None while unknown shards have no estimate)."""
        if not self.unknown_shards:
            return self.known_images
        if self._finished_sizes:
            mean = sum(self._finished_sizes) / len(self._finished_sizes)
        elif self.unknown_estimate is not None:
            mean = self.unknown_estimate
        else:
            return None
        return self.known_images + round(mean * self.unknown_shards)

    def line(self) -> str:
        """The current progress text."""
        elapsed = time.monotonic() - self._start
        rate = self.done_images / elapsed if elapsed > 0 else 0.0
        total = self.total()
        if total is None:
            count, eta = f"{self.done_images} img", "ETA ?"
        else:
            total = max(total, self.done_images)
            left = (total - self.done_images) / rate if rate > 0 else float("inf")
            eta = "ETA ?" if left == float("inf") else f"ETA {_clock(left)}"
            count = f"{self.done_images}/{total} img"
        return (
            f"[{self.prefix}] {count} | {rate:.1f} img/s | {eta} | elapsed {_clock(elapsed)}"
            f" | shards {self.done_shards}/{self.total_shards}"
        )

    def _maybe_draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the in-place line so that a log message can be printed cleanly."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
            self._last_draw = 0.0  # redraw at the next update

    def close(self) -> None:
        """Draw the final line."""
        if self.enabled:
            self._maybe_draw(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
