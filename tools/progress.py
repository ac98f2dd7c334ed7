"""Progress lines for long command-line work (on stderr, never mixed into ``--json`` output)."""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]


class Progress:
    """Status lines on stderr with a live elapsed-time counter while a step runs."""

    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        self._label = ""
        self._started = 0.0

    def step(self, label: str) -> None:
        self.done()
        self._label = label
        self._started = time.monotonic()
        if not self._enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        interactive = sys.stderr.isatty()
        spinner = "|/-\\"
        i = 0
        while not self._stop.wait(0.25 if interactive else 15.0):
            elapsed = time.monotonic() - self._started
            if interactive:
                sys.stderr.write(f"\r{spinner[i % 4]} {self._label} [{elapsed:5.0f} s]")
                sys.stderr.flush()
                i += 1
            else:
                print(f"  ... {self._label} [{elapsed:.0f} s]", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            elapsed = time.monotonic() - self._started
            end = "\r" if sys.stderr.isatty() else ""
            print(f"{end}* {self._label} [{elapsed:.1f} s]", file=sys.stderr, flush=True)
