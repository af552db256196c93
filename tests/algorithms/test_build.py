"""algorithms/build.py: what goes into an image's tag and build context."""

import sys
from pathlib import Path

ALGORITHMS_DIR = Path(__file__).resolve().parents[2] / "algorithms"
sys.path.insert(0, str(ALGORITHMS_DIR))
import build  # noqa: E402  (algorithms/ is not a package: build.py is a script)


def test_every_reference_image_runs_its_module_with_the_toolkit():
    for name in ("summary", "crosstab", "logistic"):
        dockerfile = ALGORITHMS_DIR / "images" / name / "Dockerfile"
        assert dockerfile.read_text().splitlines()[-1] == (
            f'CMD ["python3", "-m", "vantage_algorithms", "reference.{name}"]')
        assert build.copied_sources(dockerfile) == ["wheels/", "vantage_algorithms/", "reference/__init__.py",
                                                    f"reference/{name}.py"]


def test_the_tag_follows_the_copied_files_only(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM base\nCOPY --chown=1 a/ b.py /app/\nRUN true \\\n && COPY-not\n")
    for name, text in (("a/x.py", "1"), ("b.py", "2"), ("c.py", "3")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    files = {"Dockerfile": dockerfile, **{n: tmp_path / n for n in ("a/x.py", "b.py", "c.py")}}
    sources = build.copied_sources(dockerfile)
    assert sources == ["a/", "b.py"]
    tag = build.content_tag(files, sources, "sha256:base")
    (tmp_path / "c.py").write_text("changed, but not copied")
    assert build.content_tag(files, sources, "sha256:base") == tag
    (tmp_path / "a/x.py").write_text("changed")
    changed = build.content_tag(files, sources, "sha256:base")
    assert changed != tag
    assert build.content_tag(files, sources, "sha256:other-base") != changed


def test_the_context_has_the_toolkit_the_methods_and_no_caches(tmp_path):
    context = build.context_files("summary", [])
    assert "vantage_algorithms/__init__.py" in context and "reference/summary.py" in context
    assert context["Dockerfile"] == ALGORITHMS_DIR / "images" / "summary" / "Dockerfile"
    assert not [n for n in context if "__pycache__" in n or n.endswith(".pyc")]
    import tarfile

    with tarfile.open(fileobj=build.build_context(context)) as tar:
        names = tar.getnames()
    assert "wheels" in names and "Dockerfile" in names  # COPY wheels/ works with no wheels too


def test_an_unknown_image_name_is_one_sentence(capsys):
    assert build.main(["nothing", "--no-push"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("build: error: no image 'nothing' in ") and "summary" in err
