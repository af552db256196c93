"""`manage.py demo_seed`: a demo installation in one command, safe to run again.

Three hospitals, the collaboration "GBSG2 demo" between them, a superuser `admin`, a
researcher `researcher` of the first hospital, and one node per hospital whose API key
is written to `DATA_DIR/nodes/<organisation-slug>.key`. Everything is created through
the services with the system as actor, so it is audited like any other change.

Each run brings the data to that state and reports what it had to change; a second run
changes nothing. Passwords come from VANTAGE_DEMO_ADMIN_PASSWORD /
VANTAGE_DEMO_RESEARCHER_PASSWORD, or are generated once and kept in
`DATA_DIR/demo-credentials.json` (owner-only), so later runs print the same ones.
"""

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from accounts.models import User
from accounts.services import user_create, user_update
from collaborations import node_keys
from collaborations.models import Collaboration, Node, Organization
from collaborations.services import (
    collaboration_create,
    collaboration_update,
    node_create,
    node_rotate_key,
    organization_create,
)

ORGANIZATIONS = (
    ("Amsterdam UMC", "NL", "amsterdamumc.nl"),
    ("Leuven UZ", "BE", "uzleuven.be"),
    ("Heidelberg UK", "DE", "klinikum.uni-heidelberg.de"),
)
COLLABORATION = "GBSG2 demo"
CREDENTIALS_FILE = "demo-credentials.json"
NODE_KEY_DIR = "nodes"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password_env: str
    roles: tuple[str, ...]
    superuser: bool
    in_first_organization: bool


USERS = (
    DemoUser("admin", "VANTAGE_DEMO_ADMIN_PASSWORD", ("root",), superuser=True, in_first_organization=False),
    DemoUser("researcher", "VANTAGE_DEMO_RESEARCHER_PASSWORD", ("researcher",), superuser=False,
             in_first_organization=True),
    # The catalogue's two pairs of eyes: the author submits the reference algorithms, the
    # reviewer signs and approves them (no one approves their own submission). Neither is
    # staff: staff log in with a second factor, which the demo's automation does not hold.
    DemoUser("author", "VANTAGE_DEMO_AUTHOR_PASSWORD", ("root",), superuser=False, in_first_organization=False),
    DemoUser("reviewer", "VANTAGE_DEMO_REVIEWER_PASSWORD", ("root",), superuser=False, in_first_organization=False),
)


def write_owner_only(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only, at no moment partly written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file with mode 600 whatever the umask; os.replace swaps it in whole.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CredentialsFile:
    """Generated demo passwords, kept so that every run prints the same ones."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.passwords = json.loads(path.read_text()) if path.exists() else {}
        except ValueError as exc:
            raise CommandError(f"{path} is not valid JSON ({exc}); remove it to generate new passwords.")

    def get(self, username: str) -> str | None:
        return self.passwords.get(username)

    def store(self, username: str, password: str) -> None:
        self.passwords[username] = password
        write_owner_only(self.path, json.dumps(self.passwords, indent=2, sort_keys=True) + "\n")


@dataclass
class Seeder:
    """Brings the demo data to its wanted state; `changes` says what it had to do."""

    data_dir: Path
    environ: dict
    changes: list[str] = field(default_factory=list)

    def run(self) -> dict:
        organizations = [self.organization(name, country, domain) for name, country, domain in ORGANIZATIONS]
        collaboration = self.collaboration(organizations)
        credentials = CredentialsFile(self.data_dir / CREDENTIALS_FILE)
        users = [self.user(spec, organizations[0], credentials) for spec in USERS]
        nodes = [self.node(organization, collaboration) for organization in organizations]
        return {
            "changed": bool(self.changes),
            "changes": self.changes,
            "organizations": [{"id": o.pk, "name": o.name, "slug": slugify(o.name)} for o in organizations],
            "collaboration": {
                "id": collaboration.pk, "name": collaboration.name,
                "organizations": sorted(collaboration.organizations.values_list("pk", flat=True)),
            },
            "users": users,
            "nodes": nodes,
            "credentials_file": str(credentials.path) if credentials.path.exists() else None,
        }

    def organization(self, name: str, country: str, domain: str) -> Organization:
        organization = Organization.objects.filter(name=name).first()
        if organization is None:
            organization = organization_create(actor=None, name=name, country=country, domain=domain)
            self.changes.append(f"created organisation {name}")
        return organization

    def collaboration(self, organizations: list[Organization]) -> Collaboration:
        collaboration = Collaboration.objects.filter(name=COLLABORATION).first()
        if collaboration is None:
            self.changes.append(f"created collaboration {COLLABORATION}")
            return collaboration_create(actor=None, name=COLLABORATION, organizations=organizations)
        members = set(collaboration.organizations.values_list("pk", flat=True))
        missing = [o for o in organizations if o.pk not in members]
        if missing:
            collaboration = collaboration_update(
                actor=None, collaboration=collaboration,
                organizations=list(collaboration.organizations.all()) + missing,
            )
            self.changes.append(f"added {', '.join(o.name for o in missing)} to {COLLABORATION}")
        return collaboration

    def user(self, spec: DemoUser, first_organization: Organization, credentials: CredentialsFile) -> dict:
        organization = first_organization if spec.in_first_organization else None
        from_env = self.environ.get(spec.password_env) or None
        password = from_env or credentials.get(spec.username)
        source = f"from {spec.password_env}" if from_env else f"stored in {credentials.path}"
        user = User.objects.filter(username=spec.username).first()
        if password is None:
            # Stored before the user exists: a password must never be set that is kept nowhere.
            password = secrets.token_urlsafe(15)
            credentials.store(spec.username, password)
            if user is not None:
                user_update(actor=None, user=user, password=password)
                self.changes.append(f"set a new password for {spec.username} (it was stored nowhere)")
        if user is None:
            user = user_create(
                actor=None, username=spec.username, password=password, organization=organization,
                roles=list(spec.roles), is_staff=spec.superuser, is_superuser=spec.superuser,
            )
            self.changes.append(f"created user {spec.username}")
        else:
            self.complete_rights(user, spec)
            # hashers.check_password, unlike User.check_password, never re-saves the hash.
            if not check_password(password, user.password):
                if from_env:
                    user_update(actor=None, user=user, password=password)
                    self.changes.append(f"set the password of {spec.username} from {spec.password_env}")
                else:
                    # Someone changed it (in the admin, say); the stored one would mislead.
                    password, source = None, "changed since it was seeded"
        return {
            "username": user.username, "password": password, "password_source": source,
            "organization": user.organization.name if user.organization else None,
            "roles": sorted(user.roles.values_list("name", flat=True)), "is_superuser": user.is_superuser,
        }

    def complete_rights(self, user: User, spec: DemoUser) -> None:
        held = set(user.roles.values_list("name", flat=True))
        changes = {}
        if not held.issuperset(spec.roles):
            changes["roles"] = sorted(held | set(spec.roles))
        if spec.superuser and not (user.is_staff and user.is_superuser):
            changes.update(is_staff=True, is_superuser=True)
        if changes:
            user_update(actor=None, user=user, **changes)
            self.changes.append(f"gave {spec.username} back {', '.join(sorted(changes))}")

    def node(self, organization: Organization, collaboration: Collaboration) -> dict:
        slug = slugify(organization.name)
        key_file = self.data_dir / NODE_KEY_DIR / f"{slug}.key"
        node = Node.objects.filter(collaboration=collaboration, name=slug).first()
        if node is None:
            node, key = node_create(actor=None, organization=organization, collaboration=collaboration, name=slug)
            write_owner_only(key_file, key + "\n")
            self.changes.append(f"created node {slug}, key in {key_file}")
        elif not self.key_file_matches(key_file, node):
            # The key itself is stored nowhere: a lost or outdated key file means a new key.
            key = node_rotate_key(actor=None, node=node)
            write_owner_only(key_file, key + "\n")
            self.changes.append(f"rotated the key of node {slug} (its key file was missing or outdated)")
        return {"id": node.pk, "name": node.name, "organization": organization.name, "key_file": str(key_file)}

    @staticmethod
    def key_file_matches(key_file: Path, node: Node) -> bool:
        try:
            key = key_file.read_text().strip()
        except FileNotFoundError:
            return False
        return node_keys.key_matches(key, node.api_key_hash)


class Command(BaseCommand):
    help = "Create (or complete) demo organisations, collaboration, users and nodes; safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the summary as JSON, for scripts")

    def handle(self, *args, **options):
        summary = Seeder(data_dir=Path(settings.DATA_DIR), environ=dict(os.environ)).run()
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
        else:
            self.stdout.write(self.render(summary))

    def render(self, summary: dict) -> str:
        lines = []
        if summary["changed"]:
            lines.append(self.style.SUCCESS("Demo data updated:"))
            lines += [f"  - {change}" for change in summary["changes"]]
        else:
            lines.append(self.style.SUCCESS("Demo data already in place: nothing changed."))
        collaboration = summary["collaboration"]
        lines += [
            "",
            f"Organisations:  {', '.join(o['name'] for o in summary['organizations'])}",
            f"Collaboration:  {collaboration['name']} (id {collaboration['id']}, "
            f"{len(collaboration['organizations'])} organisations)",
            "Users:",
        ]
        for user in summary["users"]:
            what = "superuser" if user["is_superuser"] else ", ".join(user["roles"])
            where = f" at {user['organization']}" if user["organization"] else ""
            password = user["password"] or "(not shown)"
            lines.append(f"  {user['username']:<12} {password:<22} {what}{where} (password {user['password_source']})")
        lines.append("Node API keys (owner-only files):")
        lines += [f"  {node['name']:<16} {node['key_file']}" for node in summary["nodes"]]
        return "\n".join(lines)
