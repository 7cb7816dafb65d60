"""`paused_gc()`: Python's cyclic garbage collector off while a compile makes objects that live to its end.

A BERT-base compile builds ~1M small objects (IR values and ops, S4 instructions, their operand dicts
and dependency lists) that all stay alive until it returns; each of the collector's passes would only
traverse them again (measured: ~1 CPU s of a 9 s `s4c compile --target s4`). Reference counting still
frees everything not in a cycle at once; what is in a cycle waits for the first collection after the
pause (or an explicit gc.collect(), which works while paused: codegen/s4/buckets.py calls it between
buckets, each of which leaves a whole graph in cycles).
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused_gc():
    """Disable the cyclic GC for the block; re-enable it after, if it was on (so pauses nest)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
