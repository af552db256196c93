"""Layers point one way (issue 19): every module's imports, read with ast, name the
offending import when a package imports one above it.

    vantage/        settings, urls, asgi, the server: imported by no other package
    portal/
    tasks/
    collaborations/
    accounts/
    core/           the floor every app may import; it imports no app

The node agent and the researcher's client are programs of their own: they import no
server package (the client imports none of this repository), and no server package
imports the node agent. What an inverted dependency becomes instead: a registration
(accounts.audit.register_actor), a setting (REST_FRAMEWORK's authentication classes)
or a move.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top to bottom: a package may import its own layer and those below it.
SERVER_LAYERS = ("vantage", "portal", "tasks", "collaborations", "accounts", "core")
SERVER = set(SERVER_LAYERS)
# The packages each program may not import, beyond the server layers' own rule.
PROGRAMS = {
    "nodeagent": SERVER - {"core"},
    "client": SERVER | {"nodeagent"},
}


def _package_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute import in the file, in functions too.

    Relative imports stay inside their own package, so they cannot cross a layer."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append((node.lineno, node.module or ""))
    return found


def _forbidden_for(package: str) -> set[str]:
    # `client.vantage_client` works only from the repository root: the envelope and the
    # signatures are imported as the installed package vantage_client (requirements.txt).
    if package in PROGRAMS:
        return PROGRAMS[package] | {"client"}
    above = set(SERVER_LAYERS[: SERVER_LAYERS.index(package)])
    # vantage/ is the top: imported by no package at all, the node agent included.
    return above | {"vantage", "nodeagent", "client"} if package != "vantage" else {"nodeagent", "client"}


def offending_imports(packages=(*SERVER_LAYERS, *PROGRAMS)) -> list[str]:
    offences = []
    for package in packages:
        forbidden = _forbidden_for(package)
        for path in _package_files(package):
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top in forbidden:
                    offences.append(f"{path.relative_to(ROOT)}:{line}: {package} imports {module}")
    return offences


def test_layers_point_one_way():
    offences = offending_imports()
    assert not offences, "imports against the layers (tests/test_layers.py):\n" + "\n".join(offences)


def test_an_upward_import_is_named(tmp_path, monkeypatch):
    # The check itself: an accounts module importing tasks, and core importing an app, are reported.
    cases = (("accounts", "from tasks.models import Run\n"), ("core", "import accounts.models\n"),
             ("nodeagent", "def f():\n    from client.vantage_client import crypto\n"))
    for package, source in cases:
        (tmp_path / package).mkdir()
        (tmp_path / package / "upward.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert offending_imports(("accounts", "core", "nodeagent")) == [
        "accounts/upward.py:1: accounts imports tasks.models",
        "core/upward.py:1: core imports accounts.models",
        "nodeagent/upward.py:2: nodeagent imports client.vantage_client",
    ]
