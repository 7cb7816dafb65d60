"""The Pass base class, its result and options, and the pass registry (discovered from the modules of
this package).

A pass declares its options as typed class fields (the field name with '_' -> '-' is the option's
name in pipeline text):

    class FuseAttention(Pass):
        name = "fuse-attention"
        num_heads: int = option(0, "only fuse attention with this many heads (0: derive from shapes)")

        def run(self, graph) -> PassResult:
            return PassResult.of(apply_patterns(graph, [...]))   # {pattern class: times it fired}
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from s4c.errors import PassError
from s4c.ir import Graph

# Modules of this package that are infrastructure, not passes.
INFRASTRUCTURE = {"base", "manager", "rewrite", "pipelines", "instruments"}
OPTION_KINDS = (bool, int, float, str)
_KINDS = {k.__name__: k for k in OPTION_KINDS}  # annotations are text under `from __future__ import annotations`


@dataclass
class PassResult:
    """What one run of a pass did: `changed` (the graph is not what it was) and `stats`, counts by
    what was done (a rewrite pass: {pattern class: times it fired}; fold-constants: {"folded": n};
    ...; only non-zero counts). `analysis` is an analysis pass's side result for the caller (e.g.
    select-sparse-layout's LayoutSelection), or None."""

    changed: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    analysis: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, stats: dict[str, int], analysis: Any = None) -> "PassResult":
        """A result whose graph changed exactly when some count is non-zero (rewrite passes)."""
        stats = {k: int(v) for k, v in stats.items() if v}
        return cls(bool(stats), stats, analysis)


@dataclass
class PassOption:
    """A typed pass option: `kind` is bool, int, float or str (from the field's annotation)."""

    default: Any
    help: str = ""
    kind: type = type(None)   # filled in from the annotation when the Pass class is created
    attr: str = ""            # the Python attribute (the option name with '-' -> '_')

    def parse(self, text: str):
        if self.kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {text!r}")
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"expected a number, got {text!r}") from None
        return text

    def coerce(self, value):
        """`value` (pipeline text, or a Python value from code) as this option's kind."""
        if isinstance(value, str) and self.kind is not str:
            return self.parse(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise ValueError(f"expected {self.kind.__name__}, got {type(value).__name__} {value!r}")
        return value


def option(default: Any, help: str = "") -> Any:
    """A pass option field: `name: int = option(0, "what it does")` in a Pass subclass."""
    return PassOption(default, help)


class Pass:
    """Base class. Subclasses set `name` (kebab-case = module name), declare options as typed fields
    (`option()`), write a docstring, and implement `run(graph) -> PassResult`.

    `options` (option name -> PassOption) is derived from the fields; after construction each field
    holds its value (`self.num_heads`)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, PassOption]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = {k: v for k, v in vars(cls).items() if isinstance(v, PassOption)}
        if not declared:
            cls.options = dict(cls.options)  # inherited fields only
            return
        annotations = inspect.get_annotations(cls)
        options = dict(cls.options)
        for attr, spec in declared.items():
            kind = annotations.get(attr)
            kind = _KINDS.get(kind, kind) if isinstance(kind, str) else kind
            if kind not in OPTION_KINDS:
                raise TypeError(f"pass {cls.name or cls.__name__}: option {attr} must be annotated with one of "
                                f"bool, int, float, str (got {kind!r})")
            spec.kind, spec.attr = kind, attr
            options[attr.replace("_", "-")] = spec
            setattr(cls, attr, spec.default)  # the class attribute reads as the default
        cls.options = options

    def __init__(self, **values):
        given = {k.replace("_", "-"): v for k, v in values.items()}
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise PassError(f"pass {self.name}: unknown option(s) {', '.join(unknown)} (valid: {valid})")
        for key, spec in self.options.items():
            value = given.get(key, spec.default)
            if key in given:
                try:
                    value = spec.coerce(value)
                except ValueError as e:
                    raise PassError(f"pass {self.name}: option {key}: {e}") from None
            setattr(self, spec.attr, value)

    @property
    def option_values(self) -> dict[str, Any]:
        """option name -> this instance's value."""
        return {k: getattr(self, spec.attr) for k, spec in self.options.items()}

    def run(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def __str__(self) -> str:
        """The pass as pipeline text: its name and the options that differ from their defaults
        (parse_pipeline(str(p)) builds an equal pass; values with , { } or spaces are quoted)."""
        changed = {k: v for k, v in self.option_values.items() if v != self.options[k].default}
        return self.name + ("{" + ",".join(f"{k}={_quote(v)}" for k, v in changed.items()) + "}" if changed else "")


def _quote(value) -> str:
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',{}" ') else text


class PassFailure(Exception):
    """A pass crashed or broke the IR: a bug in s4c (exit code 1), named after the pass."""


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
