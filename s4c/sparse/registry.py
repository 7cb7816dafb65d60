"""Every supported layout, and parsing of layout strings (`dense`, `csr`, `bsr16x1`, `nm2:8`).

SUPPORTED_LAYOUTS lists the N:M patterns by name (SUPPORTED_NM_PATTERNS); `parse_layout` accepts
any `nmN:M` with 1 <= N <= M <= NM_MAX_M (e.g. `nm1:20`), which targets may offer as well."""

from __future__ import annotations

import re

from s4c.sparse.base import Layout
from s4c.sparse.bsr import SUPPORTED_BLOCK_SHAPES, BSRLayout
from s4c.sparse.csr import CSRLayout
from s4c.sparse.dense import DenseLayout
from s4c.sparse.errors import SparseFormatError
from s4c.sparse.nm import NM_MAX_M, SUPPORTED_NM_PATTERNS, NMLayout

SUPPORTED_LAYOUTS: tuple[Layout, ...] = (
    DenseLayout(),
    CSRLayout(),
    *(BSRLayout(r, c) for r, c in SUPPORTED_BLOCK_SHAPES),
    *(NMLayout(n, m) for n, m in SUPPORTED_NM_PATTERNS),
)

LAYOUTS_BY_NAME: dict[str, Layout] = {str(layout): layout for layout in SUPPORTED_LAYOUTS}

# The IR printer's spellings (`bsr<16x1>`, `nm<2:8>`) are accepted too, so printed IR parses back.
_BRACKETED = re.compile(r"^(bsr|nm)<([^<>]*)>$")
_NM = re.compile(r"^nm(\d+):(\d+)$")


def parse_layout(text: str) -> Layout:
    """The layout named by `text` (case and surrounding spaces ignored); str() gives it back.

    Raises SparseFormatError naming the supported layouts when `text` is not one of them.
    """
    name = str(text).strip().lower()
    bracketed = _BRACKETED.match(name)
    if bracketed:
        name = bracketed.group(1) + bracketed.group(2)
    if name in LAYOUTS_BY_NAME:
        return LAYOUTS_BY_NAME[name]
    nm = _NM.match(name)
    if nm and 1 <= int(nm.group(1)) <= int(nm.group(2)) <= NM_MAX_M:
        return NMLayout(int(nm.group(1)), int(nm.group(2)))
    supported = ", ".join(LAYOUTS_BY_NAME)
    raise SparseFormatError(f"unknown layout {text!r} (supported: {supported}, any nmN:M with "
                            f"1 <= N <= M <= {NM_MAX_M})") from None
