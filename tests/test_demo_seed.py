"""`manage.py demo_seed`: the demo data, created through services, safe to run again."""

import json
import stat
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import AuditEvent, User
from accounts.services import user_update
from collaborations import node_keys
from collaborations.models import Collaboration, Node, Organization
from collaborations.services import collaboration_update, node_authenticate, node_delete, node_rotate_key

ADMIN_ENV, RESEARCHER_ENV = "VANTAGE_DEMO_ADMIN_PASSWORD", "VANTAGE_DEMO_RESEARCHER_PASSWORD"
SLUGS = ("amsterdam-umc", "leuven-uz", "heidelberg-uk")


@pytest.fixture(autouse=True)
def demo_env(settings, tmp_path, monkeypatch, db):
    settings.DATA_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    monkeypatch.delenv(RESEARCHER_ENV, raising=False)
    return tmp_path


def seed(*args) -> str:
    out = StringIO()
    call_command("demo_seed", *args, stdout=out)
    return out.getvalue()


def seed_json() -> dict:
    return json.loads(seed("--json"))


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_creates_the_demo_through_the_services(demo_env):
    summary = seed_json()
    assert summary["changed"]
    assert [o["name"] for o in summary["organizations"]] == ["Amsterdam UMC", "Leuven UZ", "Heidelberg UK"]
    collaboration = Collaboration.objects.get(name="GBSG2 demo")
    assert collaboration.organizations.count() == 3
    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    assert list(admin.roles.values_list("name", flat=True)) == ["root"]
    researcher = User.objects.get(username="researcher")
    assert researcher.organization.name == "Amsterdam UMC"
    assert list(researcher.roles.values_list("name", flat=True)) == ["researcher"]
    assert not researcher.is_staff
    # The catalogue's second pair of eyes: global algorithm rights, no admin site.
    for username in ("author", "reviewer"):
        pair_of_eyes = User.objects.get(username=username)
        assert list(pair_of_eyes.roles.values_list("name", flat=True)) == ["root"] and not pair_of_eyes.is_staff
    assert Node.objects.filter(collaboration=collaboration).count() == 3
    # Every change is in the audit log, by the system.
    assert set(AuditEvent.objects.values_list("actor_type", flat=True)) == {"system"}
    assert AuditEvent.objects.filter(verb="node.created").count() == 3


def test_generated_passwords_work_and_are_kept_in_an_owner_only_file(demo_env):
    summary = seed_json()
    credentials = demo_env / "demo-credentials.json"
    assert summary["credentials_file"] == str(credentials)
    assert mode(credentials) == 0o600
    stored = json.loads(credentials.read_text())
    for user in summary["users"]:
        assert user["password"] == stored[user["username"]]
        assert User.objects.get(username=user["username"]).check_password(user["password"])


def test_each_node_key_is_written_to_an_owner_only_file_and_authenticates(demo_env):
    summary = seed_json()
    assert [n["key_file"] for n in summary["nodes"]] == [str(demo_env / "nodes" / f"{s}.key") for s in SLUGS]
    assert mode(demo_env / "nodes") == 0o700
    for entry in summary["nodes"]:
        key_file = demo_env / "nodes" / f"{entry['name']}.key"
        assert mode(key_file) == 0o600
        node = node_authenticate(api_key=key_file.read_text().strip())
        assert node is not None and node.pk == entry["id"]


def test_second_run_changes_nothing_and_says_so(demo_env):
    first = seed_json()
    key_files = {s: (demo_env / "nodes" / f"{s}.key").read_text() for s in SLUGS}
    events = AuditEvent.objects.count()

    output = seed()
    assert "nothing changed" in output
    assert AuditEvent.objects.count() == events
    assert {s: (demo_env / "nodes" / f"{s}.key").read_text() for s in SLUGS} == key_files
    second = seed_json()
    assert second["changes"] == [] and not second["changed"]
    assert second["users"] == first["users"]
    assert (Organization.objects.count(), Node.objects.count(), User.objects.count()) == (3, 3, 4)


def test_text_summary_names_users_passwords_and_key_files(demo_env):
    output = seed()
    stored = json.loads((demo_env / "demo-credentials.json").read_text())
    for username, password in stored.items():
        assert username in output and password in output
    for slug in SLUGS:
        assert str(demo_env / "nodes" / f"{slug}.key") in output
    assert "GBSG2 demo" in output


def test_passwords_from_the_environment_are_used_and_not_written_down(demo_env, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, "admin-demo-password-1")
    monkeypatch.setenv(RESEARCHER_ENV, "researcher-demo-password-1")
    monkeypatch.setenv("VANTAGE_DEMO_AUTHOR_PASSWORD", "author-demo-password-1")
    monkeypatch.setenv("VANTAGE_DEMO_REVIEWER_PASSWORD", "reviewer-demo-password-1")
    summary = seed_json()
    assert User.objects.get(username="admin").check_password("admin-demo-password-1")
    assert User.objects.get(username="researcher").check_password("researcher-demo-password-1")
    assert User.objects.get(username="author").check_password("author-demo-password-1")
    assert User.objects.get(username="reviewer").check_password("reviewer-demo-password-1")
    assert [u["password_source"] for u in summary["users"]] == [
        f"from {ADMIN_ENV}", f"from {RESEARCHER_ENV}", "from VANTAGE_DEMO_AUTHOR_PASSWORD",
        "from VANTAGE_DEMO_REVIEWER_PASSWORD"]
    assert not (demo_env / "demo-credentials.json").exists()
    assert summary["credentials_file"] is None


def test_a_new_password_in_the_environment_replaces_the_old_one(demo_env, monkeypatch):
    seed()
    monkeypatch.setenv(ADMIN_ENV, "admin-demo-password-2")
    summary = seed_json()
    assert summary["changes"] == [f"set the password of admin from {ADMIN_ENV}"]
    assert User.objects.get(username="admin").check_password("admin-demo-password-2")


def test_a_missing_key_file_gets_a_new_key_and_the_old_key_stops_working(demo_env):
    seed()
    lost = demo_env / "nodes" / "leuven-uz.key"
    old_key = lost.read_text().strip()
    lost.unlink()

    summary = seed_json()
    assert summary["changes"] == ["rotated the key of node leuven-uz (its key file was missing or outdated)"]
    assert mode(lost) == 0o600
    new_key = lost.read_text().strip()
    assert new_key != old_key
    node = Node.objects.get(name="leuven-uz")
    assert node_keys.key_matches(new_key, node.api_key_hash)
    assert node_authenticate(api_key=old_key) is None
    assert seed_json()["changes"] == []


def test_a_key_file_outdated_by_a_rotation_elsewhere_is_renewed(demo_env):
    seed()
    node_rotate_key(actor=None, node=Node.objects.get(name="amsterdam-umc"))
    summary = seed_json()
    assert summary["changes"] == ["rotated the key of node amsterdam-umc (its key file was missing or outdated)"]
    key = (demo_env / "nodes" / "amsterdam-umc.key").read_text().strip()
    assert node_authenticate(api_key=key).name == "amsterdam-umc"


def test_a_lost_credentials_file_gives_new_passwords_that_work(demo_env):
    first = seed_json()
    (demo_env / "demo-credentials.json").unlink()
    summary = seed_json()
    assert sorted(summary["changes"]) == [
        "set a new password for admin (it was stored nowhere)",
        "set a new password for author (it was stored nowhere)",
        "set a new password for researcher (it was stored nowhere)",
        "set a new password for reviewer (it was stored nowhere)",
    ]
    for old, new in zip(first["users"], summary["users"]):
        assert new["password"] != old["password"]
        assert User.objects.get(username=new["username"]).check_password(new["password"])
    assert mode(demo_env / "demo-credentials.json") == 0o600


def test_a_password_changed_since_seeding_is_left_alone_and_not_shown(demo_env):
    seed()
    user_update(actor=None, user=User.objects.get(username="researcher"), password="changed-by-the-admin-7")
    summary = seed_json()
    assert summary["changes"] == []
    researcher = summary["users"][1]
    assert (researcher["password"], researcher["password_source"]) == (None, "changed since it was seeded")
    assert User.objects.get(username="researcher").check_password("changed-by-the-admin-7")
    assert "(not shown)" in seed()


def test_rights_taken_from_the_demo_admin_are_given_back(demo_env):
    seed()
    user_update(actor=None, user=User.objects.get(username="admin"), is_superuser=False, roles=[])
    summary = seed_json()
    assert summary["changes"] == ["gave admin back is_staff, is_superuser, roles"]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and list(admin.roles.values_list("name", flat=True)) == ["root"]


def test_a_member_removed_from_the_demo_collaboration_is_added_back(demo_env):
    seed()
    collaboration = Collaboration.objects.get(name="GBSG2 demo")
    heidelberg = Organization.objects.get(name="Heidelberg UK")
    node_delete(actor=None, node=Node.objects.get(name="heidelberg-uk"))
    collaboration_update(actor=None, collaboration=collaboration,
                         organizations=list(collaboration.organizations.exclude(pk=heidelberg.pk)))
    summary = seed_json()
    assert summary["changes"][0] == "added Heidelberg UK to GBSG2 demo"
    assert collaboration.organizations.count() == 3
    assert Node.objects.filter(name="heidelberg-uk").exists()


def test_an_unreadable_credentials_file_stops_the_command_with_a_clear_message(demo_env):
    (demo_env / "demo-credentials.json").write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        seed()
