"""Compile the s4c C kernel library (codegen/c/kernels/*.c) into a shared library
and load it with ctypes.

Used by tests/test_c_kernels.py and benchmarks/bench_kernels.py; depends on
nothing else in s4c.  The shared library is cached under a key made of the
sources, the compiler and the flags, so repeated loads do not recompile.

    from s4c.codegen.c import kernels_build
    lib = kernels_build.load()                 # cc -O3 -march=native -fopenmp ...
    lib.s4c_linear_dense(out, in_, T, W.ctypes.data, X.ctypes.data, None, 0, None, Y.ctypes.data)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"

#: Flags for a fast build.  -ffp-contract=fast matters: -std=c99 otherwise turns
#: off FMA contraction in GCC (the sources also re-enable it with a pragma).
FAST_CFLAGS = ("-std=c99", "-O3", "-march=native", "-ffp-contract=fast")
#: The warning set the kernels must compile clean with.
STRICT_WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")

_P = ctypes.c_void_p  # any pointer: pass arr.ctypes.data or None
_I = ctypes.c_int
_F = ctypes.c_float
_Z = ctypes.c_size_t

#: name -> (restype, argtypes) for every public function of s4c_kernels.h.
PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "s4c_set_num_threads": (None, [_I]),
    "s4c_get_max_threads": (_I, []),
    "s4c_linear_dense": (_I, [_I, _I, _I, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_csr_u8": (_I, [_I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_csr_u16": (_I, [_I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_csr_i32": (_I, [_I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_bsr_u8": (_I, [_I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_bsr_u16": (_I, [_I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_bsr_i32": (_I, [_I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_linear_nm": (_I, [_I, _I, _I, _I, _I, _P, _P, _P, _P, _I, _P, _P]),
    "s4c_attention_scratch_floats": (_Z, [_I]),
    "s4c_attention": (_I, [_I, _I, _I, _I, _F, _P, _P, _P, _P, _P, _P, _Z]),
    "s4c_attention_qkv": (_I, [_I, _I, _I, _I, _F, _P, _P, _P, _P, _Z]),
    "s4c_layernorm": (None, [_I, _I, _P, _P, _P, _F, _P]),
    "s4c_skip_layernorm": (None, [_I, _I, _P, _P, _P, _P, _P, _F, _P, _P]),
    "s4c_gelu_erf": (None, [_Z, _P, _P]),
    "s4c_gelu_tanh": (None, [_Z, _P, _P]),
    "s4c_activation": (None, [_I, _Z, _P, _P]),
    "s4c_softmax_features": (None, [_I, _I, _P, _P]),
    "s4c_softmax_rows": (None, [_I, _I, _P, _P]),
    "s4c_transpose": (None, [_I, _I, _P, _P]),
    "s4c_embedding": (
        _I,
        [_I, _I, _I, _P, _P, _P, _P, _I, _P, _I, _P, _I, _P, _P, _F, _P],
    ),
}


def sources() -> list[Path]:
    """The C sources of the kernel library."""
    return sorted(KERNEL_DIR.glob("*.c"))


def headers() -> list[Path]:
    return sorted(KERNEL_DIR.glob("*.h"))


def find_cc(cc: str | None = None) -> str:
    """The C compiler: `cc` argument, else $CC, else cc / gcc / clang on PATH."""
    for cand in (cc, os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    raise RuntimeError("no C compiler found (set CC)")


def _cc_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError:  # pragma: no cover
        return ""


def openmp_flags(cc: str | None = None) -> list[str]:
    """["-fopenmp"] when `cc` can build and link an OpenMP shared object, else []."""
    cc = find_cc(cc)
    key = (cc, _cc_version(cc))
    if key in _OMP_CACHE:
        return _OMP_CACHE[key]
    flags: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "t.c")
        src.write_text("#include <omp.h>\nint f(void) { return omp_get_max_threads(); }\n")
        r = subprocess.run(
            [cc, "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(Path(d, "t.so"))],
            capture_output=True,
        )
        if r.returncode == 0:
            flags = ["-fopenmp"]
    _OMP_CACHE[key] = flags
    return flags


_OMP_CACHE: dict[tuple[str, str], list[str]] = {}


def cache_dir() -> Path:
    d = os.environ.get("S4C_KERNEL_CACHE")
    if d:
        return Path(d)
    return Path(tempfile.gettempdir()) / f"s4c-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"


def build(
    cc: str | None = None,
    cflags: tuple[str, ...] | list[str] = FAST_CFLAGS,
    openmp: bool = True,
    extra_flags: tuple[str, ...] | list[str] = (),
    out_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Compile the kernels into a shared library (cached) and return its path.

    Each source is compiled with `cc <cflags> [-fopenmp] <extra_flags> -fPIC -c`
    (in parallel), then linked with `-shared ... -lm`.  Compiler warnings are
    errors only if the flags say so (pass STRICT_WARNINGS in extra_flags).
    """
    cc = find_cc(cc)
    flags = list(cflags) + (openmp_flags(cc) if openmp else []) + list(extra_flags)
    h = hashlib.sha256()
    h.update(cc.encode() + b"\0" + _cc_version(cc).encode() + b"\0" + " ".join(flags).encode())
    for p in sources() + headers():
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    key = h.hexdigest()[:16]
    out = Path(out_dir) if out_dir is not None else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    lib = out / f"libs4ckernels-{key}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(dir=out) as objdir:
        # one compiler process per source (the machine has several cores), then link
        objs, procs = [], []
        for src in sources():
            obj = Path(objdir, src.stem + ".o")
            cmd = [cc, *flags, "-fPIC", "-c", str(src), "-o", str(obj)]
            procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            objs.append(str(obj))
        errors = []
        for cmd, proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{' '.join(cmd)}\n{err}")
        if errors:
            raise RuntimeError("kernel build failed:\n" + "\n".join(errors))
        tmp = str(Path(objdir, lib.name))
        cmd = [cc, *flags, "-shared", *objs, "-o", tmp, "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"kernel link failed: {' '.join(cmd)}\n{r.stderr}")
        os.replace(tmp, lib)
    return lib


def load(path: str | os.PathLike[str] | None = None, **build_kwargs: object) -> ctypes.CDLL:
    """Load the kernel library (building it first unless `path` is given) and set
    restype/argtypes of every function in PROTOTYPES."""
    lib = ctypes.CDLL(str(path if path is not None else build(**build_kwargs)))  # type: ignore[arg-type]
    for name, (res, args) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib
