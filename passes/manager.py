"""PassManager: runs a pipeline over a graph, with the instrumentation a pass developer needs.

Instrumentation lives here, not in passes: --print-after-all / --print-after NAME, --time-passes
(a table: pass, wall time, changed?), --verify-each, --dump-dir DIR (IR text and ONNX after each pass).
A failure inside a pass is reported naming the pass."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from s4c.errors import PassError, S4CError
from s4c.ir import Graph
from s4c.passes.base import Pass, get_pass
from s4c.passes.pipelines import PIPELINES
from s4c.text import print_graph
from s4c.verify import verify

_STEP = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    """'a,b{k=v,k2=v2},c' or a named pipeline ('default', 'cleanup', 'none') -> Pass instances."""
    text = text.strip()
    if text in PIPELINES:
        return parse_pipeline(",".join(PIPELINES[text])) if PIPELINES[text] else []
    passes, pos = [], 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PassError(f"cannot parse pipeline {text!r} at character {pos + 1}; expected name or name{{key=value}}"
                            f" (named pipelines: {', '.join(PIPELINES)})")
        name, body = m.group(1), m.group(2)
        options = {}
        for item in filter(None, (s.strip() for s in (body or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise PassError(f"pass {name}: option {item!r} is not key=value")
            options[key.strip()] = value.strip()
        if name in PIPELINES and not options:
            passes.extend(parse_pipeline(name))
        else:
            passes.append(get_pass(name)(**options))
        pos = m.end()
    return passes


@dataclass
class PassManager:
    passes: list[Pass]
    verify_each: bool = False
    print_after_all: bool = False
    print_after: set[str] = field(default_factory=set)
    time_passes: bool = False
    dump_dir: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stderr)
    timings: list[tuple[str, float, bool]] = field(default_factory=list)

    def run(self, graph: Graph) -> Graph:
        for index, p in enumerate(self.passes):
            start = time.perf_counter()
            try:
                changed = bool(p.run(graph))
            except PassError:
                raise
            except S4CError as e:
                raise PassError(f"pass {p.name}: {e}") from e
            except Exception as e:
                raise PassFailure(f"pass {p.name} failed: {type(e).__name__}: {e}") from e
            self.timings.append((str(p), time.perf_counter() - start, changed))
            if self.verify_each:
                try:
                    verify(graph)
                except S4CError as e:
                    raise PassFailure(f"pass {p.name} left an invalid graph: {e}") from e
            if self.print_after_all or p.name in self.print_after:
                self.out.write(f"// -----// IR after {p} //----- //\n{print_graph(graph)}")
            if self.dump_dir:
                self._dump(graph, index, p)
        if self.time_passes:
            self.out.write(self.timing_table())
        return graph

    def timing_table(self) -> str:
        total = sum(t for _, t, _ in self.timings) or 1e-12
        width = max([len(n) for n, _, _ in self.timings] + [4])
        rows = [f"{'pass':<{width}}  {'wall ms':>9}  {'share':>6}  changed"]
        rows += [f"{n:<{width}}  {t * 1e3:>9.2f}  {t / total:>6.1%}  {'yes' if c else 'no'}" for n, t, c in self.timings]
        rows.append(f"{'total':<{width}}  {total * 1e3:>9.2f}")
        return "\n".join(rows) + "\n"

    def _dump(self, graph: Graph, index: int, p: Pass) -> None:
        os.makedirs(self.dump_dir, exist_ok=True)
        stem = os.path.join(self.dump_dir, f"{index + 1:02d}-{p.name}")
        with open(stem + ".s4ir", "w") as f:
            f.write(print_graph(graph))
        try:
            from s4c.export_onnx import export_onnx
        except ImportError:
            return
        export_onnx(graph, stem + ".onnx")


class PassFailure(Exception):
    """A pass crashed or broke the IR: a bug in s4c (exit code 1), named after the pass."""
