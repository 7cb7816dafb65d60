"""s4c.passes: graph-to-graph passes over the IR, one pass per file.

A pass is a `Pass` subclass in a module whose name, with '_' -> '-', is the pass name
(`fold_constants.py` defines `fold-constants`). The registry discovers them; pipelines are
comma-separated pass names with optional `{key=value,...}` options:

    fold-constants,fuse-attention{num-heads=12},eliminate-dead-code

Infrastructure lives in `base.py` (Pass, options), `manager.py` (PassManager and its
instrumentation), `rewrite.py` (the pattern-rewrite helper), and `pipelines.py` (named pipelines).
"""

from s4c.passes.base import Pass, PassOption, all_passes, get_pass
from s4c.passes.manager import PassManager, parse_pipeline

__all__ = ["Pass", "PassOption", "PassManager", "all_passes", "get_pass", "parse_pipeline"]
