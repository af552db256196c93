from django.db import models

from collaborations.validators import validate_public_key


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 code")
    domain = models.CharField(max_length=253, blank=True)
    public_key = models.TextField(blank=True, validators=[validate_public_key],
                                  help_text="PEM public key for end-to-end encryption")
    require_second_factor = models.BooleanField(
        default=False, help_text="Its users must log in with an authenticator code (TOTP) as well as a password."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Collaboration(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        ARCHIVED = "archived"

    name = models.CharField(max_length=200, unique=True)
    organizations = models.ManyToManyField(Organization, related_name="collaborations", blank=True)
    encrypted = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    result_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Delete result files this many days after a run finishes; empty keeps them."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Study(models.Model):
    collaboration = models.ForeignKey(Collaboration, on_delete=models.CASCADE, related_name="studies")
    name = models.CharField(max_length=200)
    organizations = models.ManyToManyField(Organization, related_name="studies", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["collaboration_id", "name"]
        verbose_name_plural = "studies"
        constraints = [models.UniqueConstraint(fields=["collaboration", "name"], name="study_unique_name")]

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """One node agent of an organisation in a collaboration.

    Several nodes may serve the same organisation × collaboration (high availability):
    any of them may claim that organisation's runs. The API key itself is never stored:
    only a lookup prefix and a keyed hash (see collaborations.node_keys).
    """

    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"

    name = models.CharField(max_length=200)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="nodes")
    collaboration = models.ForeignKey(Collaboration, on_delete=models.CASCADE, related_name="nodes")
    api_key_prefix = models.CharField(max_length=16, unique=True)
    api_key_hash = models.CharField(max_length=64)
    key_created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OFFLINE)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    reported_config = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["collaboration_id", "organization_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["collaboration", "name"], name="node_unique_name_in_collaboration")
        ]
        indexes = [models.Index(fields=["organization", "collaboration"], name="node_org_collab_idx")]

    def __str__(self) -> str:
        return self.name

    # A node authenticates as itself: DRF sees it as request.user.
    is_node = True

    @property
    def is_authenticated(self) -> bool:
        return True
