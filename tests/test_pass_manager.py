"""The PassManager's instrumentation and the pipeline parser's errors: --print-after NAME,
--time-passes, --verify-each (catching a pass that breaks the IR), failures named after their pass,
one-line errors listing the valid names, and --dump-dir (IR text + ONNX per pass)."""

from __future__ import annotations

import io
import re

import onnx
import pytest

from oracle import fixtures
from s4c.cli import main
from s4c.errors import PassError, S4CError
from s4c.ir import Graph, TensorType
from s4c.passes import Pass, PassManager, all_passes, parse_pipeline
from s4c.passes.manager import PassFailure
from s4c.passes.pipelines import PIPELINES
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

    def run(self, graph: Graph) -> bool:
        v = graph.ops[0].output
        v.type = TensorType(v.dtype, v.shape + (1,))
        return False


class Crash(Pass):
    """Test-only: fails the way a bug does."""

    name = "crash"

    def run(self, graph: Graph) -> bool:
        return {}["missing"]


class RejectModel(Pass):
    """Test-only: refuses the model the way a pass reports bad input."""

    name = "reject-model"

    def run(self, graph: Graph) -> bool:
        raise S4CError(f"op {graph.ops[0].describe()} is not supported here")


def test_print_after_names_only_the_requested_pass():
    out = io.StringIO()
    PassManager(parse_pipeline("simplify-algebra,eliminate-dead-code"), print_after={"simplify-algebra"},
                out=out).run(_graph())
    text = out.getvalue()
    assert text.startswith("// -----// IR after simplify-algebra //----- //\n")
    assert text.count("IR after") == 1
    assert "%y = Relu(%x) : f32[6]" not in text  # the Reshape stays: it changes the shape
    assert "Mul(" not in text and "Tanh(" in text  # x * 1 went; dead code is the next pass's job
    parse_graph(text.split("\n", 1)[1])  # what is printed is IR text


def test_print_after_all_prints_each_pass_with_its_options():
    out = io.StringIO()
    PassManager(parse_pipeline("simplify-algebra{strict-signed-zeros=true},eliminate-dead-code"),
                print_after_all=True, out=out).run(_graph())
    headers = re.findall(r"^// -----// IR after (.*) //----- //$", out.getvalue(), re.M)
    assert headers == ["simplify-algebra{strict-signed-zeros=True}", "eliminate-dead-code"]


def test_time_passes_prints_a_table():
    out = io.StringIO()
    pm = PassManager(parse_pipeline("cleanup"), time_passes=True, out=out)
    pm.run(_graph())
    lines = out.getvalue().splitlines()
    assert re.match(r"pass\s+wall ms\s+share\s+changed$", lines[0])
    rows = [re.match(r"(\S+)\s+(\d+\.\d\d)\s+(\d+\.\d%)\s+(yes|no)$", line) for line in lines[1:-1]]
    assert all(rows), lines
    assert [r.group(1) for r in rows] == PIPELINES["cleanup"]
    changed = {r.group(1): r.group(4) for r in rows}
    assert changed["simplify-algebra"] == "yes" and changed["fold-constants"] == "no"
    assert re.match(r"total\s+\d+\.\d\d$", lines[-1])


def test_verify_each_catches_a_pass_that_corrupts_a_type():
    graph = _graph()
    with pytest.raises(PassFailure, match=r"^pass corrupt-type left an invalid graph: .*Mul -> 'a'.*f32\[2,3,1\]"):
        PassManager([CorruptType()], verify_each=True).run(graph)
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
    PassManager(parse_pipeline("cleanup"), dump_dir=str(dump)).run(_graph())
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
