"""The node's check of an algorithm's output before it is uploaded."""

import json

from nodeagent.job import IN_PROCESS_JSON_BYTES, json_problem


def test_json_check_in_process_and_in_a_child_for_large_outputs(tmp_path):
    small, large, nested = tmp_path / "small", tmp_path / "large", tmp_path / "nested"
    small.write_text('{"a": 1}')
    large.write_text(json.dumps({"values": "x" * IN_PROCESS_JSON_BYTES}) + " trailing")
    nested.write_text("[" * 100_000 + "]" * 100_000)
    assert json_problem(small, small.stat().st_size) is None
    assert "Extra data" in json_problem(large, large.stat().st_size)
    assert json_problem(nested, nested.stat().st_size)
    large.write_text(json.dumps({"values": "x" * IN_PROCESS_JSON_BYTES}))
    assert json_problem(large, large.stat().st_size) is None
