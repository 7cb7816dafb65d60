"""s4c.passes: graph-to-graph passes over the IR, one pass per file.

A pass is a `Pass` subclass in a module whose name, with '_' -> '-', is the pass name
(`fold_constants.py` defines `fold-constants`); its `run(graph)` returns a `PassResult` (changed,
stats). The registry discovers them; pipelines are comma-separated pass names with optional
`{key=value,...}` options (typed fields of the pass; "quoted" values may hold commas and braces):

    fold-constants,fuse-attention{num-heads=12},eliminate-dead-code

Infrastructure lives in `base.py` (Pass, PassResult, options), `manager.py` (PassManager, the
pipeline parser), `instruments.py` (verify / print / time / dump, shared by every manager),
`rewrite.py` (the pattern-rewrite helper), and `pipelines.py` (named pipelines, the per-target steps).
"""

from s4c.passes.base import Pass, PassFailure, PassOption, PassResult, all_passes, get_pass, option
from s4c.passes.instruments import DumpIR, PassInstrument, PassTimer, PrintIR, VerifyEach, standard_instruments
from s4c.passes.manager import PassManager, parse_pipeline

__all__ = ["Pass", "PassFailure", "PassOption", "PassResult", "all_passes", "get_pass", "option",
           "PassInstrument", "VerifyEach", "PrintIR", "PassTimer", "DumpIR", "standard_instruments",
           "PassManager", "parse_pipeline"]
