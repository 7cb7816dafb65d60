#!/usr/bin/env python3
"""Tiny pruned BERT-family models exported the way Hugging Face optimum exports them.

Users also export with optimum (`optimum-cli export onnx`). PyPI's optimum-onnx 0.1.0 needs
transformers<4.58 (and optimum~=2.1.0), which cannot share an environment with the
transformers 5 that s4c's own tooling uses. So this file has two halves:

* In the main environment, `cached_optimum_model(family, task)` returns the .onnx path of the
  model, built once per argument set under $S4C_MODEL_CACHE/optimum/ (default
  ~/.cache/s4c/models/). It builds it by running this file in a side venv,
  $S4C_MODEL_CACHE/optimum-venv (`ensure_venv()`): made once with --system-site-packages so it
  reuses the installed torch (pip is constrained to that exact torch version, never installs
  another), with optimum-onnx and transformers<4.58 installed into it from PyPI. Both caches are
  built under a temporary name and renamed into place, so concurrent builders are safe.

* In that venv, `python examples/optimum_export.py --family roberta --task feature-extraction
  --out DIR` builds the same tiny random config as examples/model_families.py (its FAMILIES /
  TINY table, seeded, random biases and LayerNorm affines), prunes every nn.Linear weight to 90%
  by magnitude (make_pruned_bert.prune_model), saves it with save_pretrained and exports it with
  `optimum.exporters.onnx.main_export` (what optimum-cli runs) to DIR/model.onnx. optimum
  validates the export against torch in onnxruntime itself. No tokenizer is written: main_export
  only needs one to find a pad token id for text-classification, and every config here sets it.
  Nothing is downloaded (HF_HUB_OFFLINE=1).

    python examples/optimum_export.py --ensure-venv                        # main env: build the venv
    python examples/optimum_export.py --family bert --task text-classification --cached   # main env
    $S4C_MODEL_CACHE/optimum-venv/bin/python examples/optimum_export.py --family bert --out /tmp/o
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_pruned_bert import build_cached, cache_dir  # noqa: E402

FAMILY_NAMES = ("bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra", "mpnet", "deberta-v2")
TASKS = {"feature-extraction": ("Model", {}), "text-classification": ("ForSequenceClassification", {"num_labels": 3})}
OPTIMUM_REQUIREMENTS = ("optimum-onnx==0.1.0", "transformers<4.58")
# packages the venv must take from the main environment, at exactly its versions
PINNED_FROM_MAIN = ("torch", "numpy", "onnx", "onnxruntime", "protobuf")
_CACHE_VERSION = 1  # bump when the generated graphs change
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}


# ----------------------------------------------------------------------------- venv (main environment)
class VenvError(RuntimeError):
    """The optimum venv could not be built (the message holds pip's or the check's output)."""


def venv_dir() -> Path:
    return cache_dir() / "optimum-venv"


def _venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _main_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PINNED_FROM_MAIN:
        try:
            out[name] = version(name).split("+")[0]  # 2.13.0+cpu: `torch==2.13.0` matches the local build
        except PackageNotFoundError:
            pass
    if "torch" not in out:
        raise VenvError("torch is not installed in this environment; the optimum venv reuses it")
    return out


def _venv_key(pins: dict) -> dict:
    return {"requirements": list(OPTIMUM_REQUIREMENTS), "pins": pins,
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}", "base": sys.base_prefix}


def _subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OFFLINE_ENV)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(cmd, what: str, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_subprocess_env(), **kw)
    if p.returncode:
        out = (p.stdout + "\n" + p.stderr).strip().splitlines()
        raise VenvError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n" + "\n".join(out[-40:]))
    return p


_CHECK = ("import json, torch, transformers, optimum.exporters.onnx, onnx, onnxruntime;"
          "print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__,"
          " 'onnx': onnx.__version__, 'transformers_file': transformers.__file__}))")


def check_venv(py: Path | None = None, pins: dict | None = None) -> dict:
    """Import torch, transformers, optimum.exporters.onnx, onnx and onnxruntime in the venv (default:
    the cached one); fail unless its torch is the main environment's and its transformers <4.58.
    Returns their versions."""
    py = py or _venv_python(venv_dir())
    pins = pins or _main_versions()
    got = json.loads(_run([py, "-c", _CHECK], "checking the optimum venv").stdout.strip().splitlines()[-1])
    if got["torch"].split("+")[0] != pins["torch"]:
        raise VenvError(f"the optimum venv has torch {got['torch']}, not the main environment's {pins['torch']}")
    major, minor = (int(x) for x in got["transformers"].split(".")[:2])
    if (major, minor) >= (4, 58):
        raise VenvError(f"the optimum venv imports transformers {got['transformers']} from "
                        f"{got['transformers_file']}, not <4.58")
    return got


def ensure_venv(verbose: bool = False) -> Path:
    """The optimum venv's python, building the venv first if it is missing or stale. Raises
    VenvError with pip's message when a package cannot be installed."""
    pins = _main_versions()
    key = _venv_key(pins)
    final = venv_dir()
    stamp = final / "s4c-venv.json"
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("key") == key:
                return _venv_python(final)
        except (OSError, ValueError):
            pass
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp", dir=final.parent))
    try:
        _run([sys.executable, "-m", "venv", "--system-site-packages", tmp], "creating the optimum venv")
        py = _venv_python(tmp)
        constraints = tmp / "s4c-constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        if verbose:
            print(f"installing {' '.join(OPTIMUM_REQUIREMENTS)} into {final} (constraints: {pins})", file=sys.stderr)
        _run([py, "-m", "pip", "install", "--quiet", "-c", constraints, *OPTIMUM_REQUIREMENTS],
             "pip install of " + " ".join(OPTIMUM_REQUIREMENTS) + " into the optimum venv")
        got = check_venv(py, pins)
        # console scripts (optimum-cli, pip) name the interpreter by absolute path: point them at `final`
        for script in py.parent.iterdir():
            if script.is_file() and not script.is_symlink():
                try:
                    text = script.read_text()
                except (UnicodeDecodeError, OSError):
                    continue
                if str(tmp) in text:
                    script.write_text(text.replace(str(tmp), str(final)))
        got.pop("transformers_file")
        (tmp / "s4c-venv.json").write_text(json.dumps({"key": key, "versions": got}, indent=1) + "\n")
        if final.exists():  # stale (other requirements or torch): move it away first
            stale = Path(tempfile.mkdtemp(prefix=final.name + ".stale", dir=final.parent))
            try:
                os.rename(final, stale / "venv")
            except OSError:
                pass  # another builder moved it
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another builder finished first
            if not stamp.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _venv_python(final)


def cached_optimum_model(family: str, task: str = "feature-extraction", sparsity: float = 0.9, seed: int = 0,
                         opset: int | None = None) -> Path:
    """The optimum export of `family` for `task` (path of model.onnx), built once per argument set
    under $S4C_MODEL_CACHE/optimum/ by this script in the optimum venv."""
    if family not in FAMILY_NAMES:
        raise ValueError(f"family must be one of {FAMILY_NAMES}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}")
    key_kw = dict(family=family, task=task, sparsity=sparsity, seed=seed, opset=opset,
                  requirements=list(OPTIMUM_REQUIREMENTS), v=_CACHE_VERSION)
    key = hashlib.sha256(json.dumps(key_kw, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_dir() / "optimum" / f"{family}_{task}_{key}"

    def build(tmp: Path) -> None:
        cmd = [ensure_venv(), Path(__file__).resolve(), "--family", family, "--task", task,
               "--sparsity", str(sparsity), "--seed", str(seed), "--out", tmp]
        if opset is not None:
            cmd += ["--opset", str(opset)]
        try:
            _run(cmd, f"optimum export of {family} ({task})")
        except VenvError as e:
            raise RuntimeError(str(e)) from None

    return build_cached(final, key_kw, build)


# ----------------------------------------------------------------------------- export (optimum venv)
def build_for_task(family: str, task: str, seed: int = 0):
    """model_families.build for `family`, with the task's head (…Model / …ForSequenceClassification)."""
    import dataclasses

    import model_families as mf

    suffix, head_kw = TASKS[task]
    fam = mf.FAMILIES[family]
    variant = dataclasses.replace(fam, model=fam.model[: -len("Model")] + suffix,
                                  config_kw={**fam.config_kw, **head_kw})
    saved = mf.FAMILIES
    mf.FAMILIES = {**saved, family: variant}  # build() reads the module's table
    try:
        return mf.build(family, seed)
    finally:
        mf.FAMILIES = saved


def make_optimum_model(out, family: str, task: str = "feature-extraction", sparsity: float = 0.9, seed: int = 0,
                       opset: int | None = None) -> Path:
    """Build, prune, save_pretrained and export with optimum's main_export into directory `out`;
    returns out/model.onnx. Runs where optimum-onnx is installed."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    from make_pruned_bert import prune_model
    from optimum.exporters.onnx import main_export

    model = build_for_task(family, task, seed)
    if sparsity:
        prune_model(model, "unstructured", sparsity, verbose=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s4c-optimum-") as src:
        model.save_pretrained(src)
        main_export(src, output=out, task=task, opset=opset, local_files_only=True, do_validation=True,
                    pad_token_id=model.config.pad_token_id)
    path = out / "model.onnx"
    if not path.exists():
        raise RuntimeError(f"optimum wrote no model.onnx into {out}: {sorted(p.name for p in out.iterdir())}")
    check_against_torch(path, model, family)
    return path


def check_against_torch(path: Path, model, family: str, tol: float = 1e-3) -> float:
    """onnxruntime on the export vs the torch model at another shape (batch 2, seq 11, padded).
    optimum validates too, but only warns when its atol is exceeded."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from model_families import FAMILIES, example_inputs

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = example_inputs(names, 2, 11, seed=7, segments=FAMILIES[family].segments)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, return_dict=True)
    diff = max(float(np.abs(v - getattr(ref, k).numpy()).max()) for k, v in got.items())
    if diff > tol:
        raise RuntimeError(f"{family}: the optimum export differs from torch by {diff} in onnxruntime")
    return diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=FAMILY_NAMES)
    ap.add_argument("--task", choices=sorted(TASKS), default="feature-extraction")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int)
    ap.add_argument("--out", help="output directory (model.onnx is written into it)")
    ap.add_argument("--cached", action="store_true", help="main env: build in the optimum venv, cached; print the path")
    ap.add_argument("--ensure-venv", action="store_true", help="main env: build the optimum venv; print its python")
    a = ap.parse_args(argv)
    if a.ensure_venv:
        print(ensure_venv(verbose=True))
        return 0
    if not a.family:
        ap.error("--family is required")
    if a.cached:
        print(cached_optimum_model(a.family, a.task, a.sparsity, a.seed, a.opset))
        return 0
    print(make_optimum_model(a.out or f"{a.family}_{a.task}_optimum", a.family, a.task, a.sparsity, a.seed, a.opset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
