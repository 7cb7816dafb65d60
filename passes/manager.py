"""PassManager: runs passes over a graph inside one context shared by its instruments
(passes/instruments.py: --verify-each, --print-after-all / --print-after NAME, --time-passes,
--dump-dir DIR), and the pipeline parser.

    manager = PassManager(parse_pipeline("default"), standard_instruments(time_passes=True))
    with manager:                                     # one context: one timing table at the end
        manager.run(graph)                            # the manager's own passes
        manager.run(copy, parse_pipeline(target_pipeline("c")))   # more passes, same instruments
    manager.results                                   # [(pass, PassResult)] in run order

A failure inside a pass is reported naming the pass: PassError for a model the pass rejects,
PassFailure for a crash (a bug in s4c).
"""

from __future__ import annotations

import re
from typing import Sequence

from s4c.errors import PassError, S4CError
from s4c.ir import Graph
from s4c.passes.base import Pass, PassFailure, PassResult, get_pass
from s4c.passes.instruments import PassInstrument
from s4c.passes.pipelines import PIPELINES

__all__ = ["PassManager", "PassFailure", "parse_pipeline"]

# name, then optionally {body}; a body may hold "quoted values" with any character but '"'
_STEP = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*(?:\{((?:[^{}"]|"[^"]*")*)\})?\s*(?:,|$)')
# body items split at commas outside quotes
_ITEM = re.compile(r'(?:[^,"]|"[^"]*")+')


def parse_pipeline(text: str) -> list[Pass]:
    """'a,b{k=v,k2="v,2"},c' or a named pipeline ('default', 'cleanup', 'none') -> Pass instances."""
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
        for item in filter(None, (s.strip() for s in _ITEM.findall(body or ""))):
            key, sep, value = item.partition("=")
            if not sep:
                raise PassError(f"pass {name}: option {item!r} is not key=value")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            options[key.strip()] = value
        if name in PIPELINES and not options:
            passes.extend(parse_pipeline(name))
        else:
            passes.append(get_pass(name)(**options))
        pos = m.end()
    return passes


class PassManager:
    """Runs passes in order, calling every instrument's hooks around each. `with manager:` opens
    the instruments' context (enter_pass_ctx ... exit_pass_ctx) around several runs; a run outside
    one opens its own. `results` lists (pass, PassResult) for every pass run, in order."""

    def __init__(self, passes: Sequence[Pass] = (), instruments: Sequence[PassInstrument] = ()):
        self.passes: list[Pass] = list(passes)
        self.instruments: list[PassInstrument] = list(instruments)
        self.results: list[tuple[Pass, PassResult]] = []
        self._depth = 0

    def __enter__(self) -> "PassManager":
        if self._depth == 0:
            for instrument in self.instruments:
                instrument.enter_pass_ctx()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> bool:
        self._depth -= 1
        if self._depth == 0:
            for instrument in self.instruments:
                instrument.exit_pass_ctx()
        return False

    def run(self, graph: Graph, passes: Sequence[Pass] | None = None) -> Graph:
        """Run `passes` (default: the manager's own) over `graph`, in place; returns `graph`."""
        with self:
            for p in self.passes if passes is None else passes:
                for instrument in self.instruments:
                    instrument.run_before_pass(p, graph)
                result = self._run_one(p, graph)
                self.results.append((p, result))
                for instrument in self.instruments:
                    instrument.run_after_pass(p, graph, result)
        return graph

    @staticmethod
    def _run_one(p: Pass, graph: Graph) -> PassResult:
        try:
            result = p.run(graph)
        except PassError:
            raise
        except S4CError as e:
            raise PassError(f"pass {p.name}: {e}") from e
        except Exception as e:
            raise PassFailure(f"pass {p.name} failed: {type(e).__name__}: {e}") from e
        if not isinstance(result, PassResult):
            raise PassFailure(f"pass {p.name} failed: run() returned {type(result).__name__}, not a PassResult")
        return result

    @property
    def changed(self) -> bool:
        """Whether any pass run so far changed a graph."""
        return any(r.changed for _, r in self.results)
