"""A bounded buffer between a container's output and the server's log endpoint.

The container may print faster than the server takes it, or while the server is
down; the buffer keeps the newest `limit` characters and says how much it dropped,
so a chatty algorithm can never make the node run out of memory.
"""

from __future__ import annotations

import codecs
import threading
import time


class LogBuffer:
    def __init__(self, limit: int = 256 * 1024):
        self.limit = limit
        self._text = ""
        self._dropped = 0
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.last_fed_at: float | None = None  # wall time of the newest text taken in

    def feed(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk)
        with self._lock:
            self.last_fed_at = time.time()
            self._append(text)

    def write(self, text: str) -> None:
        """A line of the node's own (e.g. why it killed the container)."""
        with self._lock:
            self._append(text if text.endswith("\n") else text + "\n")

    def _append(self, text: str) -> None:
        self._text += text
        excess = len(self._text) - self.limit
        if excess > 0:
            self._text = self._text[excess:]
            self._dropped += excess

    def take(self, max_chars: int) -> str:
        """Remove and return up to max_chars from the front (with a note on dropped text)."""
        with self._lock:
            note = ""
            if self._dropped:
                note = f"[node: {self._dropped} characters of log were dropped here]\n"
                self._dropped = 0
            text, self._text = self._text[:max_chars], self._text[max_chars:]
            return note + text

    def give_back(self, text: str) -> None:
        """Put back what could not be sent, in front, still within the limit."""
        with self._lock:
            combined = text + self._text
            excess = len(combined) - self.limit
            if excess > 0:
                combined = combined[excess:]
                self._dropped += excess
            self._text = combined

    def __len__(self) -> int:
        return len(self._text)
