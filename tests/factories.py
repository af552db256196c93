"""Builders for test data. They go through the services, so tests see real audit rows."""

import itertools
from datetime import datetime

from accounts.default_roles import DEFAULT_ROLES, install_default_roles
from accounts.models import Role, Rule
from accounts.services import api_login_create, user_create
from collaborations.services import collaboration_create, node_create, organization_create
from tasks.services import task_create

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery-staple"


def make_organization(name: str | None = None, **kwargs):
    return organization_create(actor=None, name=name or f"Org {next(_seq)}", **kwargs)


def make_collaboration(organizations, name: str | None = None, **kwargs):
    return collaboration_create(actor=None, name=name or f"Collab {next(_seq)}", organizations=organizations, **kwargs)


def ensure_default_roles() -> None:
    """Transactional tests flush the database, migration rows included: put the roles back."""
    if Role.objects.filter(is_builtin=True).count() < len(DEFAULT_ROLES):
        install_default_roles(Role, Rule)


def make_user(organization, roles=("researcher",), username: str | None = None, **kwargs):
    ensure_default_roles()
    return user_create(
        actor=None, username=username or f"user{next(_seq)}", password=PASSWORD,
        organization=organization, roles=list(roles), **kwargs,
    )


def access_token(user) -> str:
    """An access token of a new API login of the user, as POST /api/token/ would give."""
    return str(api_login_create(user=user).access_token)


def enrol_second_factor(user) -> str:
    """Set up and confirm a TOTP authenticator for the user; returns its secret (for pyotp)."""
    import pyotp

    from accounts.services import second_factor_begin, second_factor_confirm

    factor = second_factor_begin(user=user)
    # Confirm with the previous step's code, so that a login in the same 30 s still has a fresh one.
    totp = pyotp.TOTP(factor.secret)
    second_factor_confirm(user=user, code=totp.generate_otp(totp.timecode(datetime.now()) - 1))
    return factor.secret


def make_node(organization, collaboration, name: str | None = None):
    """A node and its API key."""
    return node_create(actor=None, organization=organization, collaboration=collaboration,
                       name=name or f"node-{next(_seq)}")


def make_task(user, collaboration, organizations, *, method="partial", image="127.0.0.1:5000/algo:1", **kwargs):
    inputs = {org.pk: b'{"method": "%s", "args": [], "kwargs": {}}' % method.encode() for org in organizations}
    return task_create(actor=user, collaboration=collaboration, name=kwargs.pop("name", "t"), image=image,
                       method=method, organization_inputs=inputs, **kwargs)


def last_event(verb: str):
    """The newest audit event with this verb."""
    from accounts.models import AuditEvent

    return AuditEvent.objects.filter(verb=verb).order_by("-id").first()


def approved_algorithm(algorithm, reviewer):
    """A submitted catalogue entry marked approved in the database, for tests about what an
    approved entry allows. Approval itself (the reviewer's signature, checked in the
    registry) is tested through algorithm_review in tests/tasks/test_catalogue.py."""
    from django.utils import timezone

    from tasks.models import Algorithm, AlgorithmApproval

    AlgorithmApproval.objects.create(algorithm=algorithm, reviewer=reviewer)
    algorithm.status = Algorithm.Status.APPROVED
    algorithm.reviewer = reviewer
    algorithm.reviewed_at = timezone.now()
    algorithm.save(update_fields=["status", "reviewer", "reviewed_at"])
    return algorithm
