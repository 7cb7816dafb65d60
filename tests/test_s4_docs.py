"""docs/isa.md documents exactly the opcodes, parameters and calibration that exist in code."""

from __future__ import annotations

import re
from pathlib import Path

from s4c.s4 import docgen, isa, load_machine

DOC = Path(__file__).resolve().parents[1] / "docs" / "isa.md"


def test_generated_sections_are_up_to_date():
    assert docgen.stale(DOC) == [], "run: python -m s4c.s4.docgen"


def test_documented_opcodes_equal_the_opcode_table():
    text = DOC.read_text(encoding="utf-8")
    documented = re.findall(r"^### `0x([0-9a-f]{2})` `([a-z0-9_.]+)`", text, re.M)
    in_code = [(f"{op.code:02x}", op.mnemonic) for op in isa.OPS]
    assert sorted(documented) == sorted(in_code)
    assert len(set(documented)) == len(documented)


def test_every_machine_parameter_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for key in load_machine().params:
        assert f"`{key}`" in text, key


def test_docs_say_the_isa_is_s4cs_own_model():
    text = DOC.read_text(encoding="utf-8")
    assert "not Moffett's ISA" in text
    assert "s4c's own design" in text
