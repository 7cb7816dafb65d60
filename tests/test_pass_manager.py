"""The PassManager, its instruments and the pipeline parser: --print-after NAME, --time-passes,
--verify-each (catching a pass that breaks the IR), --dump-dir (IR text + ONNX per pass) as
instruments shared across runs of a manager (and through the compile driver, layout selection
included), PassResult stats, typed options, failures named after their pass, one-line errors
listing the valid names, and the named pipelines."""

from __future__ import annotations

import io
import re

import onnx
import pytest

from oracle import fixtures
from s4c.cli import main
from s4c.codegen.c import CBackend
from s4c.codegen.protocol import Artifacts
from s4c.codegen.s4 import S4Backend
from s4c.errors import PassError, S4CError
from s4c.ir import Graph, TensorType
from s4c.passes import (DumpIR, Pass, PassInstrument, PassManager, PassResult, PassTimer, PrintIR, VerifyEach,
                        all_passes, option, parse_pipeline, standard_instruments)
from s4c.passes.manager import PassFailure
from s4c.passes.pipelines import CLEANUP, PIPELINES, target_pipeline
from s4c.text import parse_graph

SOURCE = """
graph @main(%x: f32[2,3]) {
  %one = const f32[] [1.0]
  %a = Mul(%x, %one) : f32[2,3]
  %b = Reshape(%a) {shape = [6]} : f32[6]
  %unused = Tanh(%x) : f32[2,3]
  %y = Relu(%b) : f32[6]
  return %y
}"""


def _graph() -> Graph:
    return parse_graph(SOURCE)


class CorruptType(Pass):
    """Test-only: gives the first op's result a wrong shape and claims no change."""

    name = "corrupt-type"

    def run(self, graph: Graph) -> PassResult:
        v = graph.ops[0].output
        v.type = TensorType(v.dtype, v.shape + (1,))
        return PassResult()


class Crash(Pass):
    """Test-only: fails the way a bug does."""

    name = "crash"

    def run(self, graph: Graph) -> PassResult:
        return {}["missing"]


class RejectModel(Pass):
    """Test-only: refuses the model the way a pass reports bad input."""

    name = "reject-model"

    def run(self, graph: Graph) -> PassResult:
        raise S4CError(f"op {graph.ops[0].describe()} is not supported here")


def test_print_after_names_only_the_requested_pass():
    out = io.StringIO()
    PassManager(parse_pipeline("simplify-algebra,eliminate-dead-code"), [PrintIR({"simplify-algebra"}, out)]
                ).run(_graph())
    text = out.getvalue()
    assert text.startswith("// -----// IR after simplify-algebra //----- //\n")
    assert text.count("IR after") == 1
    assert "%y = Relu(%x) : f32[6]" not in text  # the Reshape stays: it changes the shape
    assert "Mul(" not in text and "Tanh(" in text  # x * 1 went; dead code is the next pass's job
    parse_graph(text.split("\n", 1)[1])  # what is printed is IR text


def test_print_after_all_prints_each_pass_with_its_options():
    out = io.StringIO()
    PassManager(parse_pipeline("simplify-algebra{strict-signed-zeros=true},eliminate-dead-code"),
                standard_instruments(print_after_all=True, out=out)).run(_graph())
    headers = re.findall(r"^// -----// IR after (.*) //----- //$", out.getvalue(), re.M)
    assert headers == ["simplify-algebra{strict-signed-zeros=True}", "eliminate-dead-code"]


def test_time_passes_prints_a_table():
    out = io.StringIO()
    pm = PassManager(parse_pipeline("cleanup"), standard_instruments(time_passes=True, out=out))
    pm.run(_graph())
    lines = out.getvalue().splitlines()
    assert re.match(r"pass\s+wall ms\s+share\s+changed\s+stats$", lines[0])
    rows = [re.match(r"(\S+)\s+(\d+\.\d\d)\s+(\d+\.\d%)\s+(yes|no)\s*(.*)$", line) for line in lines[1:-1]]
    assert all(rows), lines
    assert [r.group(1) for r in rows] == PIPELINES["cleanup"]
    changed = {r.group(1): r.group(4) for r in rows}
    stats = {r.group(1): r.group(5) for r in rows}
    assert changed["simplify-algebra"] == "yes" and changed["fold-constants"] == "no"
    assert stats["simplify-algebra"] == "forwarded=1, removed=1" and stats["eliminate-dead-code"] == "removed=1"
    assert stats["fold-constants"] == ""
    assert re.match(r"total\s+\d+\.\d\d$", lines[-1])


def test_verify_each_catches_a_pass_that_corrupts_a_type():
    graph = _graph()
    with pytest.raises(PassFailure, match=r"^pass corrupt-type left an invalid graph: .*Mul -> 'a'.*f32\[2,3,1\]"):
        PassManager([CorruptType()], [VerifyEach()]).run(graph)
    # without --verify-each the corruption goes unnoticed here, which is why the flag exists
    PassManager([CorruptType()]).run(_graph())


def test_a_crash_inside_a_pass_names_the_pass():
    with pytest.raises(PassFailure, match=r"^pass crash failed: KeyError: 'missing'$"):
        PassManager(parse_pipeline("eliminate-dead-code") + [Crash()]).run(_graph())


def test_a_model_error_inside_a_pass_names_the_pass_and_the_op():
    with pytest.raises(PassError, match=r"^pass reject-model: op Mul -> 'a' is not supported here$"):
        PassManager([RejectModel()]).run(_graph())


def test_unknown_pass_is_one_line_listing_the_valid_passes():
    with pytest.raises(PassError) as info:
        parse_pipeline("fold-constants,fold-constant")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown pass 'fold-constant'; valid passes: ")
    assert message.split(": ", 1)[1].split(", ") == sorted(all_passes())


def test_bad_options_are_one_line_errors():
    with pytest.raises(PassError, match=r"^pass simplify-algebra: unknown option\(s\) signed-zeros "
                                        r"\(valid: strict-signed-zeros\)$"):
        parse_pipeline("simplify-algebra{signed-zeros=true}")
    with pytest.raises(PassError, match=r"^pass eliminate-dead-code: unknown option\(s\) x \(valid: none\)$"):
        parse_pipeline("eliminate-dead-code{x=1}")
    with pytest.raises(PassError, match=r"^pass simplify-algebra: option strict-signed-zeros: expected true or "
                                        r"false, got 'maybe'$"):
        parse_pipeline("simplify-algebra{strict-signed-zeros=maybe}")
    with pytest.raises(PassError, match=r"^pass eliminate-common-subexpressions: option content-limit: "):
        parse_pipeline("eliminate-common-subexpressions{content-limit=lots}")
    with pytest.raises(PassError, match=r"^cannot parse pipeline .* \(named pipelines: none, cleanup, default\)$"):
        parse_pipeline("fold-constants,,{")


def test_typed_options_reach_the_pass():
    (p,) = parse_pipeline("eliminate-common-subexpressions{content-limit=64}")
    assert p.content_limit == 64 and str(p) == "eliminate-common-subexpressions{content-limit=64}"


def test_dump_dir_writes_ir_text_and_onnx_per_pass(tmp_path):
    dump = tmp_path / "dump"
    PassManager(parse_pipeline("cleanup"), [DumpIR(str(dump))]).run(_graph())
    expected = [f"{i + 1:02d}-{name}" for i, name in enumerate(PIPELINES["cleanup"])]
    assert sorted(p.name for p in dump.iterdir()) == sorted(
        [s + ".s4ir" for s in expected] + [s + ".onnx" for s in expected])
    last = expected[-1]
    parse_graph((dump / f"{last}.s4ir").read_text())
    model = onnx.load(str(dump / f"{last}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Relu"]


def test_cli_reports_an_unknown_pass_in_one_line(tmp_path, capsys):
    entry = fixtures()[0]
    argv = ["compile", entry["path"], "-o", str(tmp_path / "out"), "--target", "ir", "--passes", "cleanup,bogus"]
    argv += [f"--input-shape={i['name']}=1x16" for i in entry["inputs"]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown pass 'bogus'; valid passes: ")


# -- PassResult: changed and per-pattern stats ---------------------------------------------------

def test_every_pass_returns_a_pass_result_with_counts():
    graph = _graph()
    pm = PassManager(parse_pipeline("cleanup"), [VerifyEach()])
    pm.run(graph)
    results = {p.name: r for p, r in pm.results}
    assert [p.name for p, _ in pm.results] == CLEANUP
    assert all(isinstance(r, PassResult) for r in results.values())
    assert results["simplify-algebra"] == PassResult(True, {"forwarded": 1, "removed": 1})
    assert results["eliminate-dead-code"] == PassResult(True, {"removed": 1})
    assert results["fold-constants"] == PassResult(False, {})
    assert pm.changed


def test_rewrite_passes_count_each_pattern_class():
    from pathlib import Path
    text = (Path(__file__).parent / "golden" / "fuse-attention" / "pos_sdpa.s4ir").read_text()
    graph = parse_graph(text.partition("# ---- expected ----\n")[0])
    pm = PassManager(parse_pipeline("fuse-attention"))
    pm.run(graph)
    assert pm.results[0][1] == PassResult(True, {"ScaledDotProductAttention": 1})
    pm.run(graph)  # nothing left to fuse
    assert pm.results[1][1] == PassResult(False, {})


def test_a_pass_that_returns_no_pass_result_is_a_failure_naming_it():
    class OldStyle(Pass):
        """Test-only: returns a bool, as passes did before PassResult."""

        name = "old-style"

        def run(self, graph):
            return True

    with pytest.raises(PassFailure, match=r"^pass old-style failed: run\(\) returned bool, not a PassResult$"):
        PassManager([OldStyle()]).run(_graph())


def test_fold_constants_and_cse_count_what_they_did():
    graph = parse_graph("""
graph @main(%x: f32[2]) {
  %a = const f32[2] [1.0, 2.0]
  %b = Neg(%a) : f32[2]
  %c = Abs(%b) : f32[2]
  %d = Add(%x, %c) : f32[2]
  %e = Add(%c, %x) : f32[2]
  %y = Mul(%d, %e) : f32[2]
  return %y
}""")
    pm = PassManager(parse_pipeline("fold-constants,eliminate-common-subexpressions,eliminate-dead-code"))
    pm.run(graph)
    assert [r.stats for _, r in pm.results] == [{"folded": 2}, {"merged": 1}, {}]


# -- typed options -------------------------------------------------------------------------------

class Knobs(Pass):
    """Test-only: one option of every kind."""

    name = "knobs"
    limit: int = option(4, "an int")
    scale: float = option(0.5, "a float")
    strict: bool = option(False, "a bool")
    label: str = option("", "a string")

    def run(self, graph):
        return PassResult()


def test_options_are_typed_fields():
    assert list(Knobs.options) == ["limit", "scale", "strict", "label"]
    assert [o.kind for o in Knobs.options.values()] == [int, float, bool, str]
    assert Knobs.limit == 4  # the class attribute reads as the default
    p = Knobs(limit="7", scale="2", strict="yes", label="a,b {c}")
    assert (p.limit, p.scale, p.strict, p.label) == (7, 2.0, True, "a,b {c}")
    assert Knobs(scale=3).scale == 3.0 and isinstance(Knobs(scale=3).scale, float)
    assert str(Knobs()) == "knobs"
    assert str(p) == 'knobs{limit=7,scale=2.0,strict=True,label="a,b {c}"}'
    with pytest.raises(PassError, match=r"^pass knobs: option limit: expected an integer, got 'many'$"):
        Knobs(limit="many")
    with pytest.raises(PassError, match=r"^pass knobs: option strict: expected bool, got int 1$"):
        Knobs(strict=1)
    with pytest.raises(PassError, match=r"^pass knobs: unknown option\(s\) colour \(valid: label, limit, scale, "
                                        r"strict\)$"):
        Knobs(colour="red")


def test_an_option_without_a_supported_annotation_is_refused():
    with pytest.raises(TypeError, match=r"pass bad: option things must be annotated"):
        class Bad(Pass):
            name = "bad"
            things: list = option([])


def test_pass_text_round_trips_through_the_parser_with_quoted_values():
    (p,) = parse_pipeline('select-sparse-layout{target=c,overrides="*a,b*=csr;*{x}*=dense",default=bsr4x1}')
    assert (p.target, p.overrides, p.default) == ("c", "*a,b*=csr;*{x}*=dense", "bsr4x1")
    (q,) = parse_pipeline(str(p))
    assert q.option_values == p.option_values
    with pytest.raises(PassError, match=r"^cannot parse pipeline"):
        parse_pipeline('select-sparse-layout{overrides="unterminated}')


# -- named pipelines -----------------------------------------------------------------------------

def test_default_is_built_from_cleanup_and_target_steps_are_pipeline_text():
    assert PIPELINES["cleanup"] is CLEANUP
    assert PIPELINES["default"][:len(CLEANUP)] == CLEANUP
    assert [p.name for p in parse_pipeline("default")] == PIPELINES["default"]
    text = target_pipeline("c", ["*/layer.0/*=bsr16x1", "*ffn*=csr"], "dense")
    assert text == 'select-sparse-layout{target=c,overrides="*/layer.0/*=bsr16x1;*ffn*=csr",default="dense"}'
    (p,) = parse_pipeline(text)
    assert (p.target, p.overrides, p.default) == ("c", "*/layer.0/*=bsr16x1;*ffn*=csr", "dense")
    assert str(parse_pipeline(target_pipeline("s4"))[0]) == "select-sparse-layout{target=s4}"


# -- instruments shared by every run of a manager ------------------------------------------------

class Recorder(PassInstrument):
    def __init__(self):
        self.events = []

    def enter_pass_ctx(self):
        self.events.append("enter")

    def exit_pass_ctx(self):
        self.events.append("exit")

    def run_before_pass(self, p, graph):
        self.events.append(f"before {p.name}")

    def run_after_pass(self, p, graph, result):
        self.events.append(f"after {p.name} {'changed' if result.changed else 'same'}")


def test_instrument_hooks_and_one_context_across_runs():
    rec, out = Recorder(), io.StringIO()
    pm = PassManager(parse_pipeline("simplify-algebra"), [rec, PassTimer(out)])
    with pm:
        pm.run(_graph())
        pm.run(_graph(), parse_pipeline("eliminate-dead-code"))
        assert out.getvalue() == ""  # the table comes when the context closes
    assert rec.events == ["enter", "before simplify-algebra", "after simplify-algebra changed",
                          "before eliminate-dead-code", "after eliminate-dead-code changed", "exit"]
    assert out.getvalue().count("total") == 1 and "eliminate-dead-code" in out.getvalue()
    pm.run(_graph())  # a run outside a context opens its own
    assert rec.events[-4:] == ["enter", "before simplify-algebra", "after simplify-algebra changed", "exit"]


def test_dump_numbering_continues_across_runs(tmp_path):
    dump = DumpIR(str(tmp_path))
    pm = PassManager(parse_pipeline("simplify-algebra"), [dump])
    pm.run(_graph())
    pm.run(_graph(), parse_pipeline("eliminate-dead-code"))
    assert sorted(p.name for p in tmp_path.glob("*.s4ir")) == ["01-simplify-algebra.s4ir", "02-eliminate-dead-code.s4ir"]


def test_standard_instruments_map_the_cli_flags(tmp_path):
    assert standard_instruments() == []
    kinds = [type(i) for i in standard_instruments(verify_each=True, print_after=["fuse-gelu"], time_passes=True,
                                                   dump_dir=str(tmp_path))]
    assert kinds == [PassTimer, VerifyEach, PrintIR, DumpIR]
    with pytest.raises(PassError, match=r"^--print-after: unknown pass 'fuse-gleu'; valid passes: analyze-sparsity, "):
        standard_instruments(print_after=["fuse-gleu"])


# -- the compile driver: layout selection goes through the same manager --------------------------

class _FakeC(CBackend):
    def build(self, graph, outdir, options=None):
        return Artifacts({}, {"built": True}, "## fake backend")


class _FakeS4(S4Backend):
    build = _FakeC.build


def test_compile_runs_layout_selection_under_the_same_instruments(tmp_path, monkeypatch, capsys):
    import json

    import s4c.driver

    monkeypatch.setenv("S4C_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(s4c.driver, "available_backends", lambda: {"c": _FakeC(), "s4": _FakeS4()})
    entry = fixtures()[0]
    out, dump = tmp_path / "out", tmp_path / "dump"
    argv = ["compile", entry["path"], "-o", str(out), "--target", "all", "--time-passes", "--verify-each",
            "--dump-dir", str(dump), "--print-after", "select-sparse-layout", "--layout", "*/layer.0/*=bsr4x1"]
    argv += [f"--input-shape={i['name']}=1x16" for i in entry["inputs"]]
    assert main(argv) == 0
    err = capsys.readouterr().err
    # one timing table, covering the pipeline and both targets' selection
    assert err.count("\ntotal ") == 1
    table = err[err.index("pass "):]
    rows = [line.split()[0] for line in table.splitlines()[1:-1]]
    assert rows == PIPELINES["default"] + [
        "select-sparse-layout{target=c,overrides=*/layer.0/*=bsr4x1}",
        "select-sparse-layout{target=s4,overrides=*/layer.0/*=bsr4x1}"]
    assert err.count("// -----// IR after select-sparse-layout") == 2
    n = len(PIPELINES["default"])
    dumped = sorted(p.name for p in dump.glob("*.s4ir"))
    assert dumped[-2:] == [f"{n + 1:02d}-select-sparse-layout.s4ir", f"{n + 2:02d}-select-sparse-layout.s4ir"]
    assert 'layout = "bsr4x1"' in (dump / f"{n + 1:02d}-select-sparse-layout.s4ir").read_text()

    # the compile report shows every pass's stats
    report = json.loads((out / "report.json").read_text())["passes"]
    assert report["pipeline"] == "default"
    assert [s["pass"] for s in report["steps"]] == PIPELINES["default"]
    steps = {s["pass"]: s for s in report["steps"]}
    assert steps["fuse-attention"]["stats"] == {"ScaledDotProductAttention": 2}  # one per layer
    assert steps["fuse-attention"]["changed"] is True
    assert steps["fuse-linear"]["stats"]["MatMulToLinear"] > 0
    (c_step,) = report["targets"]["c"]
    assert c_step["changed"] and c_step["stats"]["bsr4x1"] >= 4  # the overridden layer.0 weights
    md = (out / "report.md").read_text()
    assert "## Passes" in md and "| `fuse-attention` | - | yes |" in md
    assert md.index("## Passes") < md.index("## Weight layouts: target c")
