"""End to end with real node agents: what runs is decided by signatures (and, where the
node asks for it, the catalogue), checked before anything is pulled; each run records
the digest it executed."""

import pytest

from tests.nodeagent import images
from vantage_client import signing

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]


@pytest.fixture(scope="module")
def reg(registry):
    return signing.Registry(registry.host, registry.username, registry.password)


@pytest.fixture
def signer(tmp_path):
    key = signing.generate_key()
    return key, signing.write_key_pair(tmp_path / "reviewer.key", key, None)


@pytest.fixture
def probe_copy(docker_client, registry, test_images):
    """The probe algorithm under a new digest no one has signed (only a label differs)."""
    repository_path = test_images["probe"].split("/", 1)[1].split(":")[0]
    return images.fresh_image(docker_client, registry, repository_path,
                              dockerfile=f"FROM {test_images['probe'].split('@')[0]}\n")


def _rejection(site, run) -> str:
    detail = site.wait_status(run["id"], {"rejected", "completed", "failed", "crashed"})
    assert detail["status"] == "rejected", f"{detail['log']}\n{site.agent_logs()}"
    return detail["log"]


def test_signed_image_named_by_tag_runs_and_the_run_records_the_digest_it_executed(site, reg, signer, probe_copy):
    key, public = signer
    by_tag, digest = probe_copy.split("@")
    signing.sign_image(reg, by_tag, key)
    site.node(0, policy=f'require_signature = true\ntrusted_keys = ["{public}"]')
    task = site.task(by_tag, "partial", kwargs={"column": "value"})
    assert task["digest"] == ""  # the researcher named a tag
    (run,) = site.researcher.wait_runs(task["id"])
    assert run["status"] == "completed", site.agent_logs()
    assert run["executed_digest"] == digest
    assert site.researcher.run(run["id"])["executed_digest"] == digest


def test_image_pushed_under_an_allowed_name_without_a_signature_is_rejected_by_default(site, signer, probe_copy):
    _, public = signer
    repository = probe_copy.split("@")[0].rsplit(":", 1)[0]
    # The comment keeps the harness from turning signatures off: the node's own default applies.
    site.node(0, policy=f'# require_signature: the default\ntrusted_keys = ["{public}"]\n'
                        f'allowed_images = ["{repository}:*"]')
    task = site.task(probe_copy, "partial", kwargs={"column": "value"})
    log = _rejection(site, task["runs"][0])
    assert "refused by this node's policy: image" in log and "is not signed (no sha256-" in log


def test_image_signed_by_a_key_the_node_does_not_trust_is_rejected(site, reg, signer, probe_copy, tmp_path):
    _, public = signer
    stranger = signing.generate_key()
    signing.sign_image(reg, probe_copy, stranger)
    site.node(0, policy=f'require_signature = true\ntrusted_keys = ["{public}"]')
    task = site.task(probe_copy, "partial", kwargs={"column": "value"})
    assert "no key this node trusts signed" in _rejection(site, task["runs"][0])


def test_retired_catalogue_entry_is_rejected_although_its_signature_is_valid(site, reg, signer, probe_copy,
                                                                             api_server):
    key, public = signer
    image, digest = probe_copy.split("@")
    signing.sign_image(reg, probe_copy, key)
    api_server.seed("catalogue", image=image, digest=digest, statuses=["approved", "retired"],
                    organization=site.organizations[0])
    site.node(0, policy=f'require_signature = true\nrequire_catalogue = true\ntrusted_keys = ["{public}"]')
    task = site.task(probe_copy, "partial", kwargs={"column": "value"})
    log = _rejection(site, task["runs"][0])
    assert "is retired in the catalogue" in log and "policy.require_catalogue" in log
