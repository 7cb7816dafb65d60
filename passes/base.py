"""The Pass base class and the pass registry (discovered from the modules of this package)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

from s4c.errors import PassError
from s4c.ir import Graph

# Modules of this package that are infrastructure, not passes.
INFRASTRUCTURE = {"base", "manager", "rewrite", "pipelines"}


@dataclass(frozen=True)
class PassOption:
    """A typed pass option: `kind` is int, float, str or bool."""

    kind: type
    default: Any
    help: str = ""

    def parse(self, text: str):
        if self.kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {text!r}")
        return self.kind(text)


class Pass:
    """Base class. Subclasses set `name` (kebab-case = module name) and `options`, write a docstring,
    and implement `run(graph) -> bool` (True when the graph changed)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, PassOption]] = {}

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise PassError(f"pass {self.name}: unknown option(s) {', '.join(unknown)} (valid: {valid})")
        for key, option in self.options.items():
            value = values.get(key, option.default)
            if isinstance(value, str) and option.kind is not str:
                try:
                    value = option.parse(value)
                except ValueError as e:
                    raise PassError(f"pass {self.name}: option {key}: {e}") from None
            setattr(self, key.replace("-", "_"), value)
        self.option_values = {k: getattr(self, k.replace("-", "_")) for k in self.options}

    def run(self, graph: Graph) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        changed = {k: v for k, v in self.option_values.items() if v != self.options[k].default}
        return self.name + ("{" + ",".join(f"{k}={v}" for k, v in changed.items()) + "}" if changed else "")


_REGISTRY: dict[str, type[Pass]] = {}


def all_passes() -> dict[str, type[Pass]]:
    """name -> Pass class, for every pass module in this package."""
    if not _REGISTRY:
        import s4c.passes as package
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in INFRASTRUCTURE or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"s4c.passes.{info.name}")
            found = [obj for obj in vars(module).values()
                     if isinstance(obj, type) and issubclass(obj, Pass) and obj is not Pass
                     and obj.__module__ == module.__name__]
            if len(found) != 1:
                raise AssertionError(f"pass module {info.name} must define exactly one Pass, found {len(found)}")
            expected = info.name.replace("_", "-")
            if found[0].name != expected:
                raise AssertionError(f"pass in {info.name}.py is named {found[0].name!r}, expected {expected!r}")
            _REGISTRY[expected] = found[0]
    return _REGISTRY


def get_pass(name: str) -> type[Pass]:
    passes = all_passes()
    if name not in passes:
        raise PassError(f"unknown pass {name!r}; valid passes: {', '.join(sorted(passes))}")
    return passes[name]
