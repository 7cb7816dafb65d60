"""Every supported layout, and parsing of layout strings (`dense`, `csr`, `bsr16x1`, `nm2:8`)."""

from __future__ import annotations

import re

from s4c.sparse.base import Layout
from s4c.sparse.bsr import SUPPORTED_BLOCK_SHAPES, BSRLayout
from s4c.sparse.csr import CSRLayout
from s4c.sparse.dense import DenseLayout
from s4c.sparse.errors import SparseFormatError
from s4c.sparse.nm import SUPPORTED_NM_PATTERNS, NMLayout

SUPPORTED_LAYOUTS: tuple[Layout, ...] = (
    DenseLayout(),
    CSRLayout(),
    *(BSRLayout(r, c) for r, c in SUPPORTED_BLOCK_SHAPES),
    *(NMLayout(n, m) for n, m in SUPPORTED_NM_PATTERNS),
)

LAYOUTS_BY_NAME: dict[str, Layout] = {str(layout): layout for layout in SUPPORTED_LAYOUTS}

# The IR printer's spellings (`bsr<16x1>`, `nm<2:8>`) are accepted too, so printed IR parses back.
_BRACKETED = re.compile(r"^(bsr|nm)<([^<>]*)>$")


def parse_layout(text: str) -> Layout:
    """The layout named by `text` (case and surrounding spaces ignored); str() gives it back.

    Raises SparseFormatError naming the supported layouts when `text` is not one of them.
    """
    name = str(text).strip().lower()
    bracketed = _BRACKETED.match(name)
    if bracketed:
        name = bracketed.group(1) + bracketed.group(2)
    try:
        return LAYOUTS_BY_NAME[name]
    except KeyError:
        supported = ", ".join(LAYOUTS_BY_NAME)
        raise SparseFormatError(f"unknown layout {text!r} (supported: {supported})") from None
