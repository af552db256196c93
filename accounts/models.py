from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.crypto import salted_hmac


class Resource(models.TextChoices):
    ORGANIZATION = "organization"
    COLLABORATION = "collaboration"
    STUDY = "study"
    NODE = "node"
    USER = "user"
    ROLE = "role"
    ALGORITHM = "algorithm"
    TASK = "task"
    RUN = "run"
    AUDIT = "audit"


class Action(models.TextChoices):
    VIEW = "view"
    CREATE = "create"
    EDIT = "edit"
    DELETE = "delete"


class Scope(models.IntegerChoices):
    """Ordered: a wider scope includes every narrower one."""

    OWN = 1, "own"
    ORGANIZATION = 2, "organization"
    COLLABORATION = 3, "collaboration"
    GLOBAL = 4, "global"


class Rule(models.Model):
    resource = models.CharField(max_length=32, choices=Resource.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    scope = models.PositiveSmallIntegerField(choices=Scope.choices)

    class Meta:
        ordering = ["resource", "action", "scope"]
        constraints = [
            models.UniqueConstraint(fields=["resource", "action", "scope"], name="rule_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.resource}:{self.action}:{self.get_scope_display()}"


class Role(models.Model):
    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    rules = models.ManyToManyField(Rule, related_name="roles", blank=True)
    is_builtin = models.BooleanField(default=False, help_text="Created by Vantage; its name is fixed.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    organization = models.ForeignKey(
        "collaborations.Organization", on_delete=models.PROTECT, related_name="users", null=True, blank=True
    )
    roles = models.ManyToManyField(Role, related_name="users", blank=True)
    failed_logins = models.PositiveIntegerField(default=0, editable=False)
    locked_until = models.DateTimeField(null=True, blank=True, help_text="Logins are refused until then.")
    # Raised by every "end all sessions" (accounts.services.user_end_sessions): it is part
    # of the session hash below, so every browser session of the user stops at once.
    session_epoch = models.PositiveIntegerField(default=0, editable=False)

    is_node = False

    def is_locked(self, now) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def get_session_auth_hash(self) -> str:
        """Django checks this against the session's copy on every request: besides the
        password (Django's own rule), a raised session epoch ends the session."""
        return salted_hmac(
            "vantage.accounts.User.get_session_auth_hash", f"{self.password}\x00{self.session_epoch}",
            algorithm="sha256",
        ).hexdigest()

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username


class ApiLogin(models.Model):
    """One login through the API. Its refresh token and every access token minted from it
    carry the key (claim `login`); each request checks that the row still exists, so
    deleting it ends that login at once (accounts.services.user_logout, user_end_sessions)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_logins")
    key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(help_text="When its refresh token expires.")

    def __str__(self) -> str:
        return f"{self.user} since {self.created_at:%Y-%m-%d %H:%M}"


class SecondFactor(models.Model):
    """A user's TOTP authenticator (RFC 6238). Unconfirmed until the first code is entered.

    `last_step` is the time step of the last accepted code: a code is never accepted twice.
    The secret leaves the server once, on the enrolment page, and is never logged.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="second_factor")
    secret = models.CharField(max_length=64)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"authenticator of {self.user}"


class RecoveryCode(models.Model):
    """A single-use code for when the authenticator is lost; only its keyed hash is kept."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "code_hash"], name="recovery_code_unique")]


class SigningKey(models.Model):
    """A public key whose image signatures count as this user's (cosign's key-based format:
    ECDSA P-256, PKIX PEM). A catalogue approval needs the reviewer's signature of the
    entry's digest by one of their keys (tasks/signature_check.py)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="signing_keys")
    name = models.CharField(max_length=100, help_text="What the key is, for its owner (e.g. laptop 2026).")
    public_key = models.TextField(help_text="PKIX PEM, as `vantage-client signing-keygen` writes the .pub file.")
    fingerprint = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 (hex) of the DER public key: one account per key."
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["user_id", "created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:16]}...) of {self.user}"


class AuditEvent(models.Model):
    """Append-only, hash-chained record of who did what to what.

    Each row's hash covers its content and the previous row's hash, so deleting or
    editing any past row breaks every hash after it (see accounts.audit.verify_chain).
    """

    class ActorType(models.TextChoices):
        USER = "user"
        NODE = "node"
        CONTAINER = "container"
        SYSTEM = "system"

    created_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    verb = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.verb} {self.target_label}"


class AuditChainHead(models.Model):
    """Single row holding the newest event's id and hash; locking it serialises appends."""

    last_hash = models.CharField(max_length=64)
    # The newest event's id: events take the next id from here, so ids in the chain are
    # consecutive and a missing event can be named.
    last_id = models.BigIntegerField(default=0)
