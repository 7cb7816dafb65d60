"""Pass instruments: what a pass developer needs around every pass, shared by every PassManager
(TVM's PassInstrument model). An instrument is an object with hooks, all optional:

    enter_pass_ctx()                       the manager's context opens (`with manager:`, or run())
    run_before_pass(p, graph)              before each pass
    run_after_pass(p, graph, result)       after each pass (result: the PassResult)
    exit_pass_ctx()                        the context closes (e.g. PassTimer prints its table)

The CLI flags map to them (`standard_instruments`): --verify-each -> VerifyEach, --print-after-all /
--print-after PASS -> PrintIR, --time-passes -> PassTimer, --dump-dir DIR -> DumpIR. The compile
driver runs the pipeline and each target's steps (select-sparse-layout) in one manager context, so
every instrument sees every pass, and PassTimer prints one table.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, TextIO

from s4c.errors import PassError, S4CError
from s4c.ir import Graph
from s4c.passes.base import Pass, PassFailure, PassResult, all_passes
from s4c.text import print_graph
from s4c.verify import verify


class PassInstrument:
    """Base class with no-op hooks (subclasses override what they need)."""

    def enter_pass_ctx(self) -> None:
        pass

    def exit_pass_ctx(self) -> None:
        pass

    def run_before_pass(self, p: Pass, graph: Graph) -> None:
        pass

    def run_after_pass(self, p: Pass, graph: Graph, result: PassResult) -> None:
        pass


class VerifyEach(PassInstrument):
    """Run the IR verifier after every pass: a pass that breaks the IR is a PassFailure naming it."""

    def run_after_pass(self, p, graph, result):
        try:
            verify(graph)
        except S4CError as e:
            raise PassFailure(f"pass {p.name} left an invalid graph: {e}") from e


class PrintIR(PassInstrument):
    """Print the IR text after the passes named in `after` (every pass when None) to `out`."""

    def __init__(self, after: Iterable[str] | None = None, out: TextIO | None = None):
        self.after = None if after is None else set(after)
        self.out = out

    def run_after_pass(self, p, graph, result):
        if self.after is None or p.name in self.after:
            (self.out or sys.stderr).write(f"// -----// IR after {p} //----- //\n{print_graph(graph)}")


class PassTimer(PassInstrument):
    """Wall time of every pass; `records` holds (pass text, seconds, PassResult). With `out`, the
    table (pass, wall ms, share, changed, stats) is written there when the context closes."""

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.records: list[tuple[str, float, PassResult]] = []
        self._start = 0.0

    def run_before_pass(self, p, graph):
        self._start = time.perf_counter()

    def run_after_pass(self, p, graph, result):
        self.records.append((str(p), time.perf_counter() - self._start, result))

    def exit_pass_ctx(self):
        if self.out is not None and self.records:
            self.out.write(self.table())

    def table(self) -> str:
        total = sum(t for _, t, _ in self.records) or 1e-12
        width = max([len(n) for n, _, _ in self.records] + [4])
        rows = [f"{'pass':<{width}}  {'wall ms':>9}  {'share':>6}  changed  stats"]
        for n, t, r in self.records:
            row = f"{n:<{width}}  {t * 1e3:>9.2f}  {t / total:>6.1%}  {'yes' if r.changed else 'no ':<7}"
            rows.append((row + "  " + format_stats(r.stats)).rstrip())
        rows.append(f"{'total':<{width}}  {total * 1e3:>9.2f}")
        return "\n".join(rows) + "\n"


class DumpIR(PassInstrument):
    """Write the IR text (NN-pass.s4ir) and an ONNX model (NN-pass.onnx, for Netron) after every
    pass to `directory`; NN counts the passes this instrument has seen, from 01."""

    def __init__(self, directory: str):
        self.directory = directory
        self.count = 0

    def run_after_pass(self, p, graph, result):
        self.count += 1
        os.makedirs(self.directory, exist_ok=True)
        stem = os.path.join(self.directory, f"{self.count:02d}-{p.name}")
        with open(stem + ".s4ir", "w") as f:
            f.write(print_graph(graph))
        try:
            from s4c.export_onnx import export_onnx
        except ImportError:
            return
        export_onnx(graph, stem + ".onnx")


class _Stderr:
    """sys.stderr as it is when written to (pytest's capture replaces it after import)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)


_STDERR = _Stderr()


def format_stats(stats: dict[str, int]) -> str:
    """{"folded": 3, "merged": 1} -> "folded=3, merged=1"."""
    return ", ".join(f"{k}={v}" for k, v in stats.items())


def standard_instruments(*, verify_each: bool = False, print_after_all: bool = False,
                         print_after: Iterable[str] = (), time_passes: bool = False, dump_dir: str | None = None,
                         out: TextIO | None = None) -> list[PassInstrument]:
    """The instruments the CLI flags ask for, in the order their hooks run: timing (so it times the
    pass alone), verification, printing, dumping. A --print-after name that is no registered pass
    is a PassError listing the valid ones."""
    if not print_after_all:
        passes = all_passes()
        for name in print_after:
            if name not in passes:
                raise PassError(f"--print-after: unknown pass {name!r}; valid passes: {', '.join(sorted(passes))}")
    instruments: list[PassInstrument] = []
    if time_passes:
        instruments.append(PassTimer(out or _STDERR))
    if verify_each:
        instruments.append(VerifyEach())
    if print_after_all or print_after:
        instruments.append(PrintIR(None if print_after_all else set(print_after), out))
    if dump_dir:
        instruments.append(DumpIR(dump_dir))
    return instruments
