"""Docker image references: `[host[:port]/]path[:tag][@sha256:<hex>]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_REGISTRY = "docker.io"


class BadReference(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    repository: str  # host/path, without tag or digest
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, reference: str, digest: str = "") -> ImageRef:
        """Parse a reference; `digest` (from the task) pins it when the reference does not."""
        text = reference.strip()
        if not text or any(c.isspace() for c in text):
            raise BadReference(f"{reference!r} is not an image reference")
        own_digest = ""
        if "@" in text:
            text, own_digest = text.split("@", 1)
            if not DIGEST_RE.match(own_digest):
                raise BadReference(f"{reference!r}: the digest must read sha256:<64 hex digits>")
        if digest and own_digest and digest != own_digest:
            raise BadReference(f"{reference!r} names digest {own_digest}, the task pins {digest}")
        if digest and not DIGEST_RE.match(digest):
            raise BadReference(f"digest {digest!r} must read sha256:<64 hex digits>")
        repository, tag = text, ""
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            repository, tag = text.rsplit(":", 1)
        if not repository:
            raise BadReference(f"{reference!r} has no repository name")
        return cls(repository=repository, tag=tag, digest=own_digest or digest)

    @property
    def registry(self) -> str:
        first = self.repository.split("/", 1)[0]
        if "/" in self.repository and ("." in first or ":" in first or first == "localhost"):
            return first
        return DEFAULT_REGISTRY

    @property
    def name(self) -> str:
        """Repository with its tag, as people write it (`host/algo:1.2`)."""
        return f"{self.repository}:{self.tag}" if self.tag else self.repository

    @property
    def pull_reference(self) -> str:
        """What to pull: by digest when pinned (content-addressed), else by tag."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else self.name
