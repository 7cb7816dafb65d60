"""Packaging and layering rules: every package folder is installed; layers import downward only."""

import ast
import os
import re

from oracle import REPO

# folder in the repo -> the package it installs as
ROOTS = {"s4c": "s4c", "passes": "s4c.passes", "codegen": "s4c.codegen"}


def _packages_in_tree():
    found = set()
    for root, package in ROOTS.items():
        for dirpath, _, files in os.walk(os.path.join(REPO, root)):
            if "__init__.py" in files and "__pycache__" not in dirpath:
                rel = os.path.relpath(dirpath, os.path.join(REPO, root))
                found.add(package if rel == "." else package + "." + rel.replace(os.sep, "."))
    return found


def test_every_package_is_listed_in_pyproject():
    text = open(os.path.join(REPO, "pyproject.toml")).read()
    listed = set(re.findall(r'"(s4c(?:\.[a-z0-9_]+)*)"', text.split("packages = [")[1].split("]")[0]))
    assert _packages_in_tree() <= listed, sorted(_packages_in_tree() - listed)


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _modules(root):
    for dirpath, _, files in os.walk(os.path.join(REPO, root)):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


# Modules at the top of the stack (they may import anything).
DRIVER_LEVEL = {"driver.py", "cli.py", "backend.py", "inspect.py", "__main__.py"}


def test_ir_and_frontend_never_import_passes_or_codegen():
    offenders = []
    for path in _modules("s4c"):
        if os.path.basename(path) in DRIVER_LEVEL:
            continue
        for name in _imports(path):
            if name.startswith(("s4c.passes", "s4c.codegen", "passes", "codegen")):
                offenders.append(f"{os.path.relpath(path, REPO)} imports {name}")
    assert not offenders, offenders


def test_passes_never_import_codegen_or_the_driver():
    offenders = []
    for path in _modules("passes"):
        for name in _imports(path):
            if name.startswith(("s4c.codegen", "codegen", "s4c.driver", "s4c.cli", "s4c.backend")):
                offenders.append(f"{os.path.relpath(path, REPO)} imports {name}")
    assert not offenders, offenders


def test_codegen_never_imports_the_driver():
    offenders = [f"{os.path.relpath(p, REPO)} imports {n}" for p in _modules("codegen") for n in _imports(p)
                 if n.startswith(("s4c.driver", "s4c.cli", "s4c.backend"))]
    assert not offenders, offenders


def test_every_data_file_is_in_package_data():
    """A non-Python file inside an installed package must match its package-data patterns, or a
    non-editable install (the README's first command) silently lacks it."""
    import fnmatch
    import tomllib

    config = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["tool"]["setuptools"]
    dirs = config["package-dir"]
    patterns = config.get("package-data", {})
    missing = []
    for package in config["packages"]:
        root_pkg = max((p for p in dirs if package == p or package.startswith(p + ".")), key=len)
        folder = os.path.join(REPO, dirs[root_pkg], *package[len(root_pkg):].split(".")[1:])
        subpackages = {p for p in config["packages"] if p.startswith(package + ".")}
        for dirpath, dirnames, files in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"
                           and f"{package}.{os.path.relpath(os.path.join(dirpath, d), folder).replace(os.sep, '.')}"
                           not in subpackages]
            for name in files:
                if name.endswith((".py", ".pyc", ".so")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
                if not any(fnmatch.fnmatch(rel, pat) for pat in patterns.get(package, []) + patterns.get("*", [])):
                    missing.append(f"{package}: {rel}")
    assert not missing, missing
