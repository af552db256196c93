"""`run_node --check` and the disclosure settings of [algorithm_env]: the names and kinds
the algorithm toolkit reads, and the example in docs/node.md."""

import re
from pathlib import Path

import pytest

from nodeagent.checks import DISCLOSURE_SETTINGS, FAIL, OK, check_disclosure_settings
from vantage_algorithms.policy import SETTINGS, Policy, PolicyError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "node.md"


def test_the_node_knows_exactly_the_toolkits_settings_and_their_kinds():
    toolkit = {name: bool if isinstance(default, bool) else int for name, _field, default in SETTINGS}
    assert DISCLOSURE_SETTINGS == toolkit


@pytest.mark.parametrize("env, message", [
    ({"VANTAGE_MIN_CELL_COUNT": "5"}, "VANTAGE_MIN_CELL_COUNT is not a disclosure setting the algorithm toolkit knows"),
    ({"VANTAGE_ALLOW_MIN_MAX": "maybe"}, "VANTAGE_ALLOW_MIN_MAX must be true or false, not 'maybe'"),
    ({"VANTAGE_MIN_ROWS": "0"}, "VANTAGE_MIN_ROWS must be a whole number of 1 or more, not '0'"),
    ({"VANTAGE_MIN_ROWS": "ten"}, "VANTAGE_MIN_ROWS must be a whole number of 1 or more, not 'ten'"),
])
def test_check_fails_on_settings_the_toolkit_would_refuse(env, message):
    [finding] = check_disclosure_settings(env)
    assert (finding.level, finding.topic) == (FAIL, "disclosure") and finding.message.startswith(message)
    with pytest.raises(PolicyError):  # as the toolkit would, at every run
        Policy.from_env(env)


def test_other_names_in_algorithm_env_are_left_alone():
    [finding] = check_disclosure_settings({"HTTP_PROXY_FOR_MY_IMAGE": "x", "VANTAGE_MIN_CELL": "10"})
    assert (finding.level, finding.message) == (OK, "VANTAGE_MIN_CELL=10")


def test_the_algorithm_env_example_in_docs_node_md_is_right():
    text = DOCS.read_text()
    block = re.search(r"^\[algorithm_env\]\n((?:[A-Z_]+ = \"[^\"]*\"\n)+)", text, re.M)
    assert block, "docs/node.md has an [algorithm_env] example"
    env = dict(re.findall(r'^([A-Z_]+) = "([^"]*)"$', block.group(1), re.M))
    assert env and all(f.level == OK for f in check_disclosure_settings(env))
    Policy.from_env(env)
