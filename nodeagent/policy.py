"""The site's own policy, checked on the node before anything is pulled.

The server already checked the researcher's permissions; the node checks again
against rules only its operator sets, whatever the server says.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from nodeagent.config import Policy
from nodeagent.images import DIGEST_RE, ImageRef


def image_allowed(patterns: tuple[str, ...], image: ImageRef) -> bool:
    """One pattern is enough. Patterns are a digest (`sha256:...`), a reference pinned
    to a digest (`repo@sha256:...`, repo may be a pattern), or a shell-style pattern over
    the name (`host/team/*`, `host/algo:1.*`; `*` matches any characters, `/` too)."""
    for pattern in patterns:
        if DIGEST_RE.match(pattern):
            if image.digest == pattern:
                return True
        elif "@" in pattern:
            repo_pattern, digest = pattern.split("@", 1)
            if image.digest == digest and (
                fnmatchcase(image.repository, repo_pattern) or fnmatchcase(image.name, repo_pattern)
            ):
                return True
        elif fnmatchcase(image.name, pattern):
            return True
        elif ":" not in pattern.rsplit("/", 1)[-1] and fnmatchcase(image.repository, pattern):
            # A pattern without a tag allows every tag of the repositories it names.
            return True
    return False


def image_refusal(policy: Policy, image: ImageRef) -> str | None:
    """Why this node refuses the image whoever sends it, or None."""
    if policy.require_digest and not image.digest:
        return f"image {image} is not pinned to a digest and this node requires one (policy.require_digest)"
    if policy.allowed_images is not None and not image_allowed(policy.allowed_images, image):
        return f"image {image} is not in this node's allowed images (policy.allowed_images)"
    return None


def refusal(policy: Policy, *, image: ImageRef, init_organization: int | None,
            created_by: int | None, created_by_username: str | None) -> str | None:
    """Why this node refuses the run, or None when its policy allows it."""
    why = image_refusal(policy, image)
    if why:
        return why
    if policy.allowed_organizations is not None and init_organization not in policy.allowed_organizations:
        return f"organisation {init_organization} may not send tasks to this node (policy.allowed_organizations)"
    if policy.allowed_users is not None:
        who = {created_by, created_by_username} - {None}
        if not who & set(policy.allowed_users):
            shown = created_by_username or created_by or "an unknown user"
            return f"user {shown} may not send tasks to this node (policy.allowed_users)"
    return None
