"""The C backend's options (`--target c`, `s4c run --backend c`), typed.

    COptions(cc="clang", cflags="-O2", threads=4)
    get_backend("c").options({"cflags": "-O2"})     # from a mapping; unknown names are an error
"""

from __future__ import annotations

from dataclasses import dataclass

from s4c.codegen.protocol import BackendOptions


@dataclass(frozen=True)
class COptions(BackendOptions):
    """cc:       C compiler (None: $CC, else cc)
    cflags:   flags replacing toolchain.DEFAULT_CFLAGS (a string, split like a shell, or a sequence)
    openmp:   add the compiler's OpenMP flag when it has one
    compile:  build libmodel.so (False: sources and weights.bin only)
    source:   the source model's name in model.c's header (None: the graph's name)
    threads:  threads the loaded model runs on (None: OpenMP's default)
    profile:  time every step; the table is printed at exit"""

    cc: str | None = None
    cflags: str | tuple[str, ...] | None = None
    openmp: bool = True
    compile: bool = True
    source: str | None = None
    threads: int | None = None
    profile: bool = False
