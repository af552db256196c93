"""Count the lines of this repository that touch private Django, DRF or SQLite names.

    .venv/bin/python bench/private_internals.py          # the count, then every line
    .venv/bin/python bench/private_internals.py --count  # the count only

A line counts when it
- reads, writes, calls or overrides an underscore name (not a dunder) that the
  frameworks define (`paginator._get_page`, `super()._commit()`, `def _clean_expired`,
  `queryset._fields`), or imports one; a name this repository defines too counts
  only when it is read on another object than `self`/`cls`;
- uses `__dict__` or `vars()` on an object (emptying or copying a framework object's
  state, or reading a model instance's columns from it);
- uses one of the undocumented compiler, query and connection attributes in
  INTERNAL_NAMES, or an attribute of a queryset's `query`.

`_meta`, `_default_manager` and `_base_manager` are not counted: Django documents them. The frameworks'
underscore names are read from their installed sources, so run this with the project's
virtualenv. Only files that import a framework (or live under tests/) are scanned: the
client, the node agent and the algorithms use none of them.
"""

import argparse
import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("django", "rest_framework", "rest_framework_simplejwt", "channels", "channels_redis",
              "django_filters", "drf_spectacular", "asgiref", "daphne")
# Documented as public despite the underscore: the Model _meta API, and the managers
# (docs/topics/db/managers.txt names Model._default_manager and _base_manager).
PUBLIC_UNDERSCORE = {"_meta", "_default_manager", "_base_manager"}
INTERNAL_NAMES = {
    # SQL compiler and query internals (what ModelIterable reads)
    "get_compiler", "klass_info", "annotation_col_map", "get_related_populators", "col_count",
    "has_extra_select", "get_converters", "values_select", "extra_select", "annotation_select",
    # database connection and cursor internals
    "convert_query", "execute_wrappers", "queries_logged", "wrap_database_errors",
    "validate_no_broken_transaction",
    # private names of newer releases than the installed one (read where they exist)
    "_fetch_mode",
}


def _underscore(name: str) -> bool:
    return len(name) > 1 and name[0] == "_" and name[1] != "_" and name not in PUBLIC_UNDERSCORE


def _defined_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
    return {name for name in names if _underscore(name)}


def framework_names() -> set[str]:
    names = set()
    for package in FRAMEWORKS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            for path in Path(location).rglob("*.py"):
                try:
                    names |= _defined_names(ast.parse(path.read_text(encoding="utf-8")))
                except (SyntaxError, UnicodeDecodeError):
                    continue
    return names


def repository_files() -> list[Path]:
    me = Path(__file__).resolve()
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0:
        paths = [ROOT / line for line in listed.stdout.split()]
    else:  # an exported tree without .git (e.g. `git archive` of an older commit, to compare)
        paths = [p for p in ROOT.rglob("*.py") if not {".venv", "node_modules"} & set(p.relative_to(ROOT).parts)]
    return [path for path in paths if path.resolve() != me]


def _imports_framework(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        if any(m.split(".")[0] in FRAMEWORKS or m.split(".")[0] == "sqlite3" for m in modules):
            return True
    return False


def _reads_by_name(call: ast.Call) -> bool:
    """getattr/hasattr/setattr/delattr(obj, "name"), or mapping.get/pop("name")."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in ("getattr", "hasattr", "setattr", "delattr")
    return isinstance(func, ast.Attribute) and func.attr in ("get", "pop")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_imports(tree: ast.Module, modules: dict[str, Path]) -> set[Path]:
    """This repository's modules that `tree` imports (`from a.b import c` gives a.b, and a.b.c if a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {modules[name] for name in names if name in modules}
    return found


def _overridden(path: Path, tree: ast.Module) -> set[tuple[str, str]]:
    """(class, method) pairs of this module whose underscore method overrides a framework's.

    Decided on the imported class: a method counts when a framework class in its MRO
    defines the same name."""
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if not classes:
        return set()
    try:
        module = importlib.import_module(_module_name(path))
    except Exception:  # a module that cannot be imported alone (e.g. a script): no overrides known
        return set()
    pairs = set()
    for node in classes:
        cls = getattr(module, node.name, None)
        if not isinstance(cls, type):
            continue
        framework_bases = [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in FRAMEWORKS]
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _underscore(item.name) and any(
                item.name in vars(base) for base in framework_bases
            ):
                pairs.add((node.name, item.name))
    return pairs


def scan(files: list[Path], framework: set[str]) -> list[tuple[str, int, str, str]]:
    trees = {}
    for path in files:
        try:
            trees[path] = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
    modules = {_module_name(path): path for path in trees}
    hits: dict[tuple[str, int], set[str]] = {}
    for path, tree in trees.items():
        relative = str(path.relative_to(ROOT))
        if not (relative.startswith("tests/") or _imports_framework(tree)):
            continue
        overrides = _overridden(path, tree)
        overridden_names = {name for _, name in overrides}
        # An underscore name this module, or a module of ours it imports, defines is ours,
        # unless it overrides a framework's.
        own_here = _defined_names(tree)
        own_imported = set()
        for imported in _project_imports(tree, modules):
            own_imported |= _defined_names(trees[imported])
        private = (framework - ((own_here | own_imported) - overridden_names)) | overridden_names
        # A framework's name that only this module's own classes define too (`self._fields`
        # here, `queryset._fields` there) is the framework's when read on another object.
        shared = (framework & own_here) - own_imported

        def hit(node, why):
            hits.setdefault((relative, node.lineno), set()).add(why)

        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for item in cls.body:
                if (cls.name, getattr(item, "name", None)) in overrides:
                    hit(item, f"def {item.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if node.attr in private or (node.attr in shared and not on_self):
                    hit(node, node.attr)
                elif node.attr in INTERNAL_NAMES:
                    hit(node, node.attr)
                elif node.attr == "__dict__":
                    hit(node, "__dict__")
                elif isinstance(node.value, ast.Attribute) and node.value.attr == "query" or (
                    isinstance(node.value, ast.Name) and node.value.id == "query"
                ):
                    hit(node, f"query.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FRAMEWORKS:
                for alias in node.names:
                    if _underscore(alias.name):
                        hit(node, f"import {alias.name}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "vars":
                hit(node, "vars()")
            elif isinstance(node, ast.Call) and _reads_by_name(node):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value in private:
                        hit(node, repr(arg.value))  # getattr(obj, "_name"), __dict__.get("_name")
    sources: dict[str, list[str]] = {}
    found = []
    for (relative, lineno), why in sorted(hits.items()):
        if relative not in sources:
            sources[relative] = (ROOT / relative).read_text(encoding="utf-8").splitlines()
        found.append((relative, lineno, ", ".join(sorted(why)), sources[relative][lineno - 1].strip()))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", action="store_true", help="print the count only")
    args = parser.parse_args()
    if importlib.util.find_spec("django") is None:
        print("private_internals: Django is not importable; run with the project's .venv/bin/python",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantage.settings")
    import django

    django.setup()
    found = scan(repository_files(), framework_names())
    print(f"{len(found)} lines touch private Django/DRF/SQLite names")
    if not args.count:
        for relative, lineno, why, text in found:
            print(f"{relative}:{lineno}: [{why}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
