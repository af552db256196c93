import pytest

from nodeagent.config import Policy
from nodeagent.images import BadReference, ImageRef
from nodeagent.policy import image_allowed, refusal

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def ref(text, digest=""):
    return ImageRef.parse(text, digest=digest)


def test_image_reference_parts():
    image = ref(f"127.0.0.1:5000/team/algo:1.2@{DIGEST}")
    assert (image.registry, image.repository, image.tag, image.digest) == (
        "127.0.0.1:5000", "127.0.0.1:5000/team/algo", "1.2", DIGEST)
    assert image.pull_reference == f"127.0.0.1:5000/team/algo@{DIGEST}"
    assert ref("algo").registry == "docker.io" and ref("algo").pull_reference == "algo:latest"
    assert ref("localhost/algo:2", digest=DIGEST).digest == DIGEST


@pytest.mark.parametrize("text", ["", "has space", "algo@sha256:short", f"algo@{DIGEST}"])
def test_bad_references_are_refused(text):
    with pytest.raises(BadReference):
        ImageRef.parse(text, digest=OTHER if "@" in text and "short" not in text else "")


@pytest.mark.parametrize("pattern, image, allowed", [
    ("host/team/*", "host/team/algo:1", True),
    ("host/team/*", "host/other/algo:1", False),
    ("host/team/algo", "host/team/algo:7", True),  # no tag in the pattern: every tag
    ("host/team/algo:1.*", "host/team/algo:1.4", True),
    ("host/team/algo:1.*", "host/team/algo:2.0", False),
    (DIGEST, f"host/anything@{DIGEST}", True),
    (DIGEST, f"host/anything@{OTHER}", False),
    (f"host/team/*@{DIGEST}", f"host/team/algo:1@{DIGEST}", True),
    (f"host/team/*@{DIGEST}", f"host/team/algo:1@{OTHER}", False),
    (f"host/team/*@{DIGEST}", "host/team/algo:1", False),
])
def test_image_patterns(pattern, image, allowed):
    assert image_allowed((pattern,), ref(image)) is allowed


def check(policy, image=f"host/team/algo:1@{DIGEST}", org=1, user=7, username="alice"):
    return refusal(policy, image=ref(image), init_organization=org, created_by=user, created_by_username=username)


def test_an_empty_policy_allows_everything():
    assert check(Policy(), image="anything:latest") is None


def test_each_rule_refuses_with_its_reason():
    assert "not pinned to a digest" in check(Policy(require_digest=True), image="host/team/algo:1")
    assert "not in this node's allowed images" in check(Policy(allowed_images=("host/other/*",)))
    assert "organisation 1 may not" in check(Policy(allowed_organizations=(2, 3)))
    assert "user alice may not" in check(Policy(allowed_users=(8, "bob")))


def test_users_are_allowed_by_id_or_username():
    assert check(Policy(allowed_users=(7,))) is None
    assert check(Policy(allowed_users=("alice",))) is None
    assert "an unknown user" in check(Policy(allowed_users=(7,)), user=None, username=None)
