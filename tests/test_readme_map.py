"""The README's "to find X, open Y" table holds for every op, pass and S4 instruction: each rule
it gives (a grep, a file named after the pass, a Stream method named after the instruction) finds
the thing in one hop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s4c import ops
from s4c.codegen.c.lower import EMITTERS
from s4c.codegen.s4.base import KERNELS
from s4c.codegen.s4.elementwise import ELEMENTWISE
from s4c.codegen.s4.movement import MOVE_DATA
from s4c.codegen.s4.stream import Stream
from s4c.ops.elementwise import BINARY, UNARY
from s4c.passes import all_passes
from s4c.s4.isa import OPS

REPO = Path(__file__).resolve().parents[1]


def _text(folder: str, pattern: str = "*.py") -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / folder).glob(pattern)))


def test_the_readme_has_the_table():
    readme = (REPO / "README.md").read_text()
    assert "To find X, open Y" in readme
    for rule in ("an op's S4 kernel", "an op's C emitter", "a pass `x-y`", "an S4 instruction `u.x`",
                 "a target's cost model"):
        assert rule in readme, rule


@pytest.mark.parametrize("name", sorted(ops.REGISTRY))
def test_op_rules(name):
    assert f'"{name}"' in _text("s4c/ops"), "definition / reference"
    if name in EMITTERS and name not in UNARY and name not in BINARY:
        assert re.search(rf'emits\(.*"{name}"', _text("codegen/c", "emit_*.py")), "C emitter"
    if name in KERNELS and name not in ELEMENTWISE and name not in MOVE_DATA:
        assert re.search(rf'kernel\(.*"{name}"', _text("codegen/s4")), "S4 kernel"


@pytest.mark.parametrize("name", sorted(all_passes()))
def test_pass_rule(name):
    assert (REPO / "passes" / (name.replace("-", "_") + ".py")).is_file()
    assert (REPO / "tests" / "golden" / name).is_dir()


_WRITERS = {"vbin": ("add", "sub", "mul", "div", "max", "min"), "reduce": ("rsum", "rmax", "rmean")}


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.mnemonic)
def test_instruction_rule(spec):
    unit, _, x = spec.mnemonic.partition(".")
    if spec.unit in ("sync", "ctrl"):
        assert "SIGNAL" in _text("codegen/s4", "schedule.py")       # sync.*, end
        return
    assert spec.run.__module__ == f"s4c.s4.ops_{unit}"
    writer = next((w for w, names in _WRITERS.items() if x in names), x)
    if not hasattr(Stream, writer):
        writer = "vun"                                              # vpu unary ops
        assert unit == "vpu"
    assert callable(getattr(Stream, writer))
