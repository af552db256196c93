"""Container tokens: what an algorithm container presents (through its node's proxy).

A node asks for one per run it holds (claimed or running) and writes it into the run's
token file. The token is a JWT signed with the server key, bound to the run, and through
it to the task, job, collaboration, organisation, node and image. It works until the
run's deadline and no longer:

- once the run is final (checked on every request: the run's row is read each time,
  never cached, so a finished run's container is cut off at once);
- once the node's API key is rotated (the token carries the key prefix, as node tokens do).

What a container may do with it is small and listed in docs/node.md ("Container tokens
(server side)"): create subtasks of its own job, read its job's tasks, runs and
results, and read its collaboration's member organisations.

Its `sub` claim is the container's identity as vantage6 4.x writes it (an object with
task_id, organization_id, collaboration_id, node_id, image, databases...): the
vantage6 algorithm client reads it, without verifying, to learn where it runs and which
image and databases its subtasks use. Authorisation never reads `sub`; it uses the
claims below and the run's row.
"""

from dataclasses import dataclass
from datetime import timedelta

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import AccessToken

from collaborations.models import Node
from core.errors import Conflict
from tasks.models import Run

CONTAINER_CLAIM = "container_run"
# Node id and key prefix under their own names: a container token must never read as a
# node token to code that looks for `node_id`.
CONTAINER_NODE_CLAIM = "container_node"
CONTAINER_NODE_KEY_CLAIM = "container_node_key"
HELD_STATUSES = (Run.Status.CLAIMED, Run.Status.RUNNING)


@dataclass(frozen=True, eq=False)
class ContainerPrincipal:
    """The algorithm container of one run, as request.user.

    Neither a user nor a node: accounts.permissions gives it no role scope, IsUser and
    IsNode refuse it, and only views that name it in IsContainer let it in.
    """

    container_run: Run  # audited as container:run#<id> (registered with accounts.audit in tasks.apps)
    run_id: int
    task_id: int
    job_id: int
    collaboration_id: int
    organization_id: int
    node_id: int
    image: str
    digest: str

    is_authenticated = True
    is_anonymous = False
    is_node = False
    is_container = True

    def __str__(self) -> str:
        return f"container of run #{self.run_id}"


def container_token_issue(*, run: Run, node: Node) -> tuple[str, int]:
    """A container token for a run this node holds, and its lifetime in seconds.

    Conflict when the run is not held by this node (another node of the organisation
    claimed it, it is still pending, or it is final) or its deadline has passed.
    """
    if run.node_id != node.pk or run.status not in HELD_STATUSES:
        raise Conflict("Only the node holding a claimed or running run can get its container token.")
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.VANTAGE_RUN_DEADLINE_SECONDS)
    if run.deadline_at is not None:
        expires_at = min(expires_at, run.deadline_at)
    expires_in = int((expires_at - now).total_seconds())
    if expires_in <= 0:
        raise Conflict("The run's deadline has passed.")
    task = run.task
    token = AccessToken()
    token.set_exp(from_time=now, lifetime=timedelta(seconds=expires_in))
    token[CONTAINER_CLAIM] = run.pk
    token["task_id"] = task.pk
    token["job_id"] = task.job_id or task.pk
    token["collaboration_id"] = task.collaboration_id
    token["organization_id"] = run.organization_id
    token[CONTAINER_NODE_CLAIM] = node.pk
    token[CONTAINER_NODE_KEY_CLAIM] = node.api_key_prefix
    token["image"] = task.image
    token["digest"] = task.digest
    token["sub"] = {
        "client_type": "container", "task_id": task.pk, "organization_id": run.organization_id,
        "collaboration_id": task.collaboration_id, "node_id": node.pk, "study_id": task.study_id,
        "store_id": None, "image": task.image, "databases": task.databases,
    }
    return str(token), expires_in


def container_token_claims(raw: str) -> dict:
    """The claims of a valid container token; TokenError for anything else.

    Checked as simplejwt checks access tokens (signature with the server key and its
    algorithm, audience and issuer when set, expiry, token type), except for `sub`:
    PyJWT (2.10 and later) refuses a `sub` that is not a string unless told not to look,
    and a container token's `sub` is vantage6's identity object.
    """
    try:
        claims = jwt.decode(
            raw, token_backend.get_verifying_key(raw), algorithms=[token_backend.algorithm],
            audience=token_backend.audience, issuer=token_backend.issuer, leeway=token_backend.get_leeway(),
            options={"verify_aud": token_backend.audience is not None, "verify_sub": False,
                     "require": ["exp", CONTAINER_CLAIM]},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError("Token is invalid or expired") from exc
    if claims.get(api_settings.TOKEN_TYPE_CLAIM) != AccessToken.token_type:
        raise TokenError("Token has wrong type")
    return claims


def container_principal(token: dict) -> ContainerPrincipal:
    """The principal for a verified container token's claims; AuthenticationFailed once it no longer holds.

    One query: the run with its task and node, read fresh on every request.
    """
    run = Run.objects.select_related("task", "node").defer("input", "log").filter(pk=token[CONTAINER_CLAIM]).first()
    if (
        run is None
        or run.node is None
        or run.node_id != token.get(CONTAINER_NODE_CLAIM)
        or run.node.api_key_prefix != token.get(CONTAINER_NODE_KEY_CLAIM)
        or run.task_id != token.get("task_id")
    ):
        raise exceptions.AuthenticationFailed("Container token is no longer valid.", code="token_not_valid")
    if run.status not in HELD_STATUSES:
        raise exceptions.AuthenticationFailed(
            f"The run is {run.status}: its container token no longer works.", code="token_not_valid"
        )
    task = run.task
    return ContainerPrincipal(
        container_run=run, run_id=run.pk, task_id=task.pk, job_id=task.job_id or task.pk,
        collaboration_id=task.collaboration_id, organization_id=run.organization_id, node_id=run.node_id,
        image=task.image, digest=task.digest,
    )
