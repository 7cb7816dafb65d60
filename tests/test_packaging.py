"""Packaging rules: every package folder is installed, every data file is package data (the layering is tests/test_imports.py)."""

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


# Which layer may import which (IR/ops <- frontend, sparse, targets, ISA <- passes <- codegen <-
# driver/CLI) is checked once, for every module, by tests/test_imports.py.


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


def test_plot_extra_provides_matplotlib():
    """The README promises plots where matplotlib is installed and names the extra that installs it;
    that extra must list matplotlib, and the dev extras (what CI installs) must include it, so the
    plots are tested, not only their text tables."""
    import tomllib

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    extras = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["project"]["optional-dependencies"]
    named = re.findall(r"pip install '\.\[(\w+)\]'", readme)
    assert "where matplotlib is installed" in readme and named, "README should name the extra that installs matplotlib"
    for name in named:
        assert name in extras, f"README names extra {name!r}, pyproject.toml has {sorted(extras)}"
    plot = [d for name in named for d in extras[name] if re.match(r"matplotlib\b", d)]
    assert plot, f"no extra named in the README lists matplotlib: {named}"
    assert any(re.match(r"matplotlib\b", d) for d in extras["dev"])
