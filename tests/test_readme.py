"""The README's first set-up command (the main job on the bundled model) runs as written.

Every `s4c ...` step of the first ```sh block is run with this interpreter (`python -m s4c`) in a
scratch folder that sees the repository's `examples/`; the `pip install .` step is the packaging
test's business (tests/test_packaging.py). The outputs of the S4 and C runs must agree with the
reference evaluator's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start() -> list[list[str]]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    steps = [shlex.split(step) for step in block.strip().split("&&")]
    assert steps[0][:2] == ["pip", "install"], steps[0]
    return steps[1:]


def test_quick_start_runs_and_backends_agree(tmp_path):
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    steps = _quick_start()
    assert [s[:2] for s in steps[:1]] == [["s4c", "compile"]]
    backends = []
    for step in steps:
        assert step[0] == "s4c", step
        r = subprocess.run([sys.executable, "-m", "s4c", *step[1:]], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{shlex.join(step)}: {r.stderr}"
        if step[1] == "run":
            backends.append(step[step.index("--backend") + 1] if "--backend" in step else "ref")
            if backends[-1] == "s4":
                assert "s4: modelled" in r.stdout
    assert {"s4", "c"} <= set(backends), "the quick start shows both backends"

    # the same inputs through the reference evaluator
    outdir = steps[0][steps[0].index("-o") + 1]
    inputs = steps[1][steps[1].index("--inputs") + 1]
    r = subprocess.run([sys.executable, "-m", "s4c", "run", outdir, "--inputs", inputs, "-o", "ref.npz"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "ref.npz") as ref:
        for step in steps[1:]:
            with np.load(tmp_path / step[step.index("-o") + 1]) as got:
                assert sorted(got.files) == sorted(ref.files)
                for k in ref.files:
                    assert np.max(np.abs(got[k] - ref[k])) <= 1e-4, (step, k)
