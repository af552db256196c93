"""A run's folder on the node: the agent's copies of the files its container gets (copied into
the container's own volume, nodeagent/volumes.py), and the token written last."""

from nodeagent.workspace import RunFolder


def test_prepare_writes_the_run_files_for_the_agent_alone_with_an_empty_token(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b'{"method": "partial"}')
    assert folder.input.read_bytes() == b'{"method": "partial"}'
    # The token comes later; no container reads these files (they are copied into its volume).
    assert folder.token.read_bytes() == b""
    assert {p.stat().st_mode & 0o777 for p in (folder.input, folder.token, folder.output)} == {0o600}
    assert folder.path.stat().st_mode & 0o777 == 0o700


def test_write_token_replaces_the_token_file_whole_and_leaves_nothing_else(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b"{}")
    before = {p.name for p in folder.path.iterdir()}
    folder.write_token("container.token.jwt")
    assert folder.token.read_text() == "container.token.jwt"
    assert folder.token.stat().st_mode & 0o777 == 0o600
    assert {p.name for p in folder.path.iterdir()} == before


def test_prepare_again_starts_from_a_fresh_folder(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b"{}")
    folder.write_token("old")
    (folder.path / "left").write_text("x")
    folder.prepare(input_bytes=b"{}")
    assert folder.token.read_bytes() == b"" and not (folder.path / "left").exists()
