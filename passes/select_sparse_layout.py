"""select-sparse-layout: choose the storage layout of every Linear's weight for one target."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from s4c.errors import PassError, S4CError
from s4c.ir import Graph
from s4c.passes.analyze_sparsity import declares
from s4c.passes.base import Pass, PassResult, option
from s4c.sparse import Layout, NMLayout, SparseFormatError, SparsityReport, parse_layout
from s4c.sparse.uses import WeightUse, analyze_uses, weight_uses
from s4c.targets import LinearShapes, Target, get_target

# The Linear attribute holding the candidates' modelled costs, when the op registry declares it.
COSTS_ATTR = "layout_costs"


@dataclass
class LayoutChoice:
    """The decision for one Linear weight (the pass's side table, read by the compile report)."""

    use: WeightUse
    report: SparsityReport
    layout: Layout
    chosen_by: str                                        # "model", "default" or "override GLOB"
    costs: dict[str, float] = field(default_factory=dict)  # candidate -> modelled seconds
    bytes: dict[str, int] = field(default_factory=dict)    # candidate (and dense) -> storage bytes


@dataclass
class LayoutSelection:
    """The pass's analysis (PassResult.analysis): the target's cost model and every choice."""

    target: Target
    choices: list[LayoutChoice]


@dataclass(frozen=True)
class _Rule:
    text: str       # as the user wrote it, for messages
    glob: str | None  # None: the default
    layout_text: str


class SelectSparseLayout(Pass):
    """For every Linear (and LinearInt8: an i8 weight), store the weight in the layout with the lowest modelled cost on `target`
    (s4c.targets: `s4` from the S4 machine model, `c` from the C kernels' calibration or defaults)
    among the layouts the target runs that can hold it (Target.candidates): dense always, CSR, every
    BSR block shape (the cost counts the zeros stored in kept blocks), the named N:M patterns where
    the weight complies, its tightest 1:M for any M <= 32 (nm1:20 for a weight pruned 1:20, whether
    or not 20 divides its width) and, on S4, N:M with fill-in (N = the fullest group's count). Ties
    go to fewer bytes, then to the candidates' order (s4c.sparse.SUPPORTED_LAYOUTS first).

    `overrides` = "GLOB=layout;GLOB=layout": a weight whose operand name, constant name or any of
    the op's ONNX node names matches GLOB (fnmatch, case-sensitive) gets that layout; when several
    match, the last one wins. `default` = a layout for every weight no override matches, instead of
    the cost model. A malformed layout, one the target does not run, or an N:M pattern the weight
    breaks is a one-line PassError naming the weight and the supported layouts.

    Records the choice in the Linear's `layout` attribute and, when the op registry declares it,
    the candidates' modelled seconds in `layout_costs` (["dense=2.159e-03", "csr=3.845e-04", ...]);
    always in the side table `self.choices` (a list of LayoutChoice), which the PassResult's
    `analysis` (a LayoutSelection) also carries, for the compile report. Stats: how many weights
    got each layout."""

    name = "select-sparse-layout"
    target: str = option("", "backend to choose for: s4 or c (required)")
    overrides: str = option("", "GLOB=layout;GLOB=layout (weight or ONNX node name globs)")
    default: str = option("", "layout for weights no override matches, instead of the cost model")

    def __init__(self, **values):
        super().__init__(**values)
        self.choices: list[LayoutChoice] = []
        self.target_model: Target | None = None

    def _fail(self, message: str) -> PassError:
        return PassError(f"pass {self.name}: {message}")

    def run(self, graph: Graph) -> PassResult:
        if not self.target:
            raise self._fail("option target is required (s4 or c)")
        try:
            target = get_target(self.target)
        except S4CError as e:
            raise self._fail(str(e)) from None
        self.target_model = target
        uses = [use for use in weight_uses(graph) if use.op.op in ("Linear", "LinearInt8")]
        rules = self._rules()
        layouts = {rule: self._validate(rule, target, uses) for rule in rules}
        overrides = [rule for rule in rules if rule.glob is not None]
        default = next((rule for rule in rules if rule.glob is None), None)

        self.choices = []
        changed = False
        for use, report in zip(uses, analyze_uses(uses)):
            shapes = LinearShapes(use.tokens, report)
            candidates = target.candidates(report)
            costs = {str(layout): target.cost(use.op.op, layout, shapes) for layout in candidates}
            nbytes = {str(layout): report.storage_bytes(layout) for layout in candidates}
            rule = next((r for r in reversed(overrides) if _matches(r.glob, use)), default)
            if rule is not None:
                layout = layouts[rule]
                if isinstance(layout, NMLayout) and not report.satisfies(layout):
                    worst = report.max_nonzeros_per_group[layout.m]
                    raise self._fail(f"weight {use.name!r} cannot be stored as {layout} ({rule.text}): a group of "
                                     f"{layout.m} holds {worst} nonzeros; compliant layouts: "
                                     f"{', '.join(costs)}")
                chosen_by = "default" if rule.glob is None else f"override {rule.glob}"
            else:
                order = {name: i for i, name in enumerate(costs)}
                best = min(costs, key=lambda name: (costs[name], nbytes[name], order[name]))
                layout, chosen_by = parse_layout(best), "model"
            self.choices.append(LayoutChoice(use, report, layout, chosen_by, costs, nbytes))

            attrs = use.op.attrs
            if attrs.get("layout") != str(layout):
                attrs["layout"] = str(layout)
                changed = True
            if declares(use.op, COSTS_ATTR):
                recorded = [f"{name}={seconds:.3e}" for name, seconds in costs.items()]
                if attrs.get(COSTS_ATTR) != recorded:
                    attrs[COSTS_ATTR] = recorded
                    changed = True
        stats: dict[str, int] = {}
        for choice in self.choices:
            stats[str(choice.layout)] = stats.get(str(choice.layout), 0) + 1
        return PassResult(changed, stats, LayoutSelection(target, self.choices))

    # -- options ----------------------------------------------------------------------------------
    def _rules(self) -> list[_Rule]:
        rules = []
        for item in filter(None, (s.strip() for s in self.overrides.split(";"))):
            glob, sep, layout_text = item.rpartition("=")
            if not sep or not glob.strip() or not layout_text.strip():
                raise self._fail(f"override {item!r} is not GLOB=layout")
            rules.append(_Rule(f"override {item!r}", glob.strip(), layout_text.strip()))
        if self.default.strip():
            rules.append(_Rule(f"default {self.default.strip()!r}", None, self.default.strip()))
        return rules

    def _validate(self, rule: _Rule, target: Target, uses: list[WeightUse]) -> Layout:
        """The rule's layout, or a PassError naming the first weight it applies to."""
        matched = [use for use in uses if rule.glob is None or _matches(rule.glob, use)]
        whose = f"weight {matched[0].name!r} ({rule.text})" if matched else f"{rule.text} (matches no weight)"
        supported = ", ".join(target.supported_names)
        try:
            layout = parse_layout(rule.layout_text)
        except SparseFormatError:
            raise self._fail(f"{whose}: unknown layout {rule.layout_text!r}; target {target.name} supports: "
                             f"{supported}") from None
        if not target.supports(layout):
            raise self._fail(f"{whose}: target {target.name} does not run layout {layout}; supported: "
                             f"{supported}")
        return layout


def _matches(glob: str, use: WeightUse) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for name in use.names)
