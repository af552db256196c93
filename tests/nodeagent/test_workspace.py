"""A run's folder on the node: the files its container gets, and the token written last."""

from nodeagent.workspace import RunFolder


def test_prepare_writes_the_run_files_with_an_empty_token_for_the_container_user(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b'{"method": "partial"}')
    assert folder.input.read_bytes() == b'{"method": "partial"}'
    # Docker needs every bind source when the container is created; the token comes later.
    assert folder.token.read_bytes() == b""
    assert folder.token.stat().st_mode & 0o777 == 0o644
    assert folder.output.stat().st_mode & 0o777 == 0o666
    assert folder.path.stat().st_mode & 0o777 == 0o700


def test_write_token_replaces_the_token_file_whole_and_leaves_nothing_else(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b"{}")
    before = {p.name for p in folder.path.iterdir()}
    folder.write_token("container.token.jwt")
    assert folder.token.read_text() == "container.token.jwt"
    assert folder.token.stat().st_mode & 0o777 == 0o644
    assert {p.name for p in folder.path.iterdir()} == before


def test_prepare_again_starts_from_a_fresh_folder(tmp_path):
    folder = RunFolder(tmp_path, 7)
    folder.prepare(input_bytes=b"{}")
    folder.write_token("old")
    (folder.path / "left").write_text("x")
    folder.prepare(input_bytes=b"{}")
    assert folder.token.read_bytes() == b"" and not (folder.path / "left").exists()
