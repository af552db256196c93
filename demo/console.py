"""Progress lines for the demo: a live timer on a terminal, plain start/end lines in a log."""

import sys
import threading
import time


def say(message: str) -> None:
    print(f"vantage: {message}", flush=True)


class Progress:
    """`with Progress("building images"):` shows the step while it lasts and how long it took.

    On a terminal the line is redrawn every half second with the elapsed time (and the
    latest `update()` text); elsewhere (CI logs, pipes) one line at the start and one at
    the end, so logs stay readable.
    """

    def __init__(self, what: str, stream=None):
        self.what = what
        self.stream = stream or sys.stdout
        self.detail = ""
        self.tty = self.stream.isatty()
        self._stop = threading.Event()
        self._thread = None
        self._started = 0.0

    def update(self, detail: str) -> None:
        self.detail = detail
        if not self.tty:
            self._write(f"vantage: {self.what}: {detail}\n")

    def __enter__(self):
        self._started = time.monotonic()
        if self.tty:
            self._thread = threading.Thread(target=self._redraw, daemon=True)
            self._thread.start()
        else:
            self._write(f"vantage: {self.what} ...\n")
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        if self._thread:
            self._thread.join()
        took = time.monotonic() - self._started
        outcome = "done" if exc_type is None else "failed"
        end = "\r\033[K" if self.tty else ""
        self._write(f"{end}vantage: {self.what}: {outcome} ({took:.1f} s)\n")
        return False

    def _redraw(self) -> None:
        while not self._stop.wait(0.5):
            took = time.monotonic() - self._started
            detail = f" — {self.detail}" if self.detail else ""
            self._write(f"\r\033[Kvantage: {self.what} ({took:.0f} s){detail}"[:200])

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
