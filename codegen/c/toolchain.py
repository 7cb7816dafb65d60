"""Compiling the generated C into a shared library.

    flags = REQUIRED + (cflags or DEFAULT_CFLAGS) + ["-fopenmp" when the compiler can (probed)]

Library sources (kernels, s4c_extra.c) are compiled once per (compiler, flags, source text) into a
cache (S4C_KERNEL_CACHE or $TMPDIR/s4c-c-objects-UID), so compiling a model compiles model.c only.
Everything runs in OUTDIR/c with relative paths, and no object files are left there.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from s4c.codegen.c import kernels_build
from s4c.codegen.c.options import COptions
from s4c.errors import TargetError

DEFAULT_CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast"]
# -std=c99: the dialect the generator writes; -fno-strict-aliasing: arena bytes are reused for
# tensors of different element types; hidden visibility: only the s4c_model_* API is exported.
REQUIRED = ["-std=c99", "-fPIC", "-fno-strict-aliasing", "-fvisibility=hidden"]


def resolve(options: COptions) -> tuple[str, list[str]]:
    """(compiler, flags) from the backend options cc / cflags / openmp."""
    try:
        cc = kernels_build.find_cc(options.cc)
    except RuntimeError as e:
        raise TargetError(f"C backend: {e}") from None
    if options.cc and not shutil.which(options.cc):
        raise TargetError(f"C backend: compiler {options.cc!r} not found")
    cflags = options.cflags
    if cflags is None:
        flags = list(DEFAULT_CFLAGS)
    elif isinstance(cflags, str):
        flags = shlex.split(cflags)
    else:
        flags = list(cflags)
    if options.openmp and "-fno-openmp" not in flags and "-fopenmp" not in flags:
        flags += kernels_build.openmp_flags(cc)
    flags = [f for f in flags if f != "-fno-openmp"]
    return cc, REQUIRED + flags


def _cache_dir() -> Path:
    d = os.environ.get("S4C_KERNEL_CACHE")
    base = Path(d) if d else Path(tempfile.gettempdir()) / f"s4c-c-objects-{os.getuid() if hasattr(os, 'getuid') else 0}"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _run(cmds: list[tuple[list[str], str]], cwd: str) -> None:
    procs = [(cmd, subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for cmd, _ in cmds]
    errors = []
    for cmd, proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()][:4]
            errors.append(f"`{' '.join(cmd)}` failed in {cwd}: {' / '.join(lines)}")
    if errors:
        more = f" (and {len(errors) - 1} more command(s))" if len(errors) > 1 else ""
        raise TargetError(f"C backend: compilation failed: {errors[0]}{more}")


def compile_library(cdir: Path, sources: list[str], options: COptions, out_name: str = "libmodel.so") -> dict:
    """Build cdir/out_name from cdir's sources; returns {"cc", "flags"}."""
    cc, flags = resolve(options)
    version = kernels_build._cc_version(cc)
    headers = b"".join(p.name.encode() + p.read_bytes() for p in sorted(cdir.glob("*.h")) if p.name != "model.h")
    cache = _cache_dir()
    objects: list[str] = []
    jobs = []
    with tempfile.TemporaryDirectory(prefix="s4c-build-") as tmp:
        for src in sources:
            text = (cdir / src).read_bytes()
            if src == "model.c":
                obj = os.path.join(tmp, "model.o")
                jobs.append(([cc, *flags, "-c", src, "-o", obj], obj))
                objects.append(obj)
                continue
            key = hashlib.sha256(b"\0".join([cc.encode(), version.encode(), " ".join(flags).encode(), src.encode(),
                                             text, headers])).hexdigest()[:20]
            obj = cache / f"{Path(src).stem}-{key}.o"
            objects.append(str(obj))
            if not obj.exists():
                part = os.path.join(tmp, f"{Path(src).stem}-{key}.o")
                jobs.append(([cc, *flags, "-c", src, "-o", part], str(obj)))
        _run(jobs, str(cdir))
        for cmd, dest in jobs:
            built = cmd[-1]
            if built != dest:
                shutil.move(built, dest)
        lib_tmp = os.path.join(tmp, out_name)
        _run([([cc, *flags, "-shared", *objects, "-o", lib_tmp, "-lm"], lib_tmp)], str(cdir))
        shutil.move(lib_tmp, cdir / out_name)
    return {"cc": cc, "flags": flags}
