"""The generated blocks of benchmarks/RESULTS.md, shared by the benchmarks' --update-results.

Each benchmark owns one block between two HTML comment markers (`begin` ... `end`); rewriting it
keeps every other section and the hand-written notes around it. A benchmark whose block is not
there yet gets a new section at the end of the file: `## heading`, one line naming the script,
then the block.
"""

from __future__ import annotations

import os


def write_results_block(path: str, generated: str, begin: str, end: str, heading: str, made_by: str) -> None:
    """Put `generated` (which starts with `begin` and ends with `end`) in place of the old block
    in `path`, or append it as a new `## heading` section (`made_by`: its first line, e.g.
    "Made by `benchmarks/bench_x.py`."); the file is created when absent."""
    if not (generated.startswith(begin) and generated.rstrip("\n").endswith(end)):
        raise ValueError("the generated block must start and end with its markers")
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{made_by}\n\n{generated}\n"
    with open(path, "w") as f:
        f.write(text)
