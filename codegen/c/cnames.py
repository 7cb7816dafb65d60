"""C spellings: element types, literals, and the one way model names reach generated C (comments).

Names from the model (tensor, node, graph names) are never C identifiers, string literals or
preprocessor text: identifiers are generated (t12, w3, op7_add), and names appear only inside
/* ... */ comments, quoted and escaped by `comment_name` so that no comment terminator, newline,
trigraph or non-ASCII byte survives.
"""

from __future__ import annotations

import math
import re

import numpy as np

from s4c.errors import TargetError

# IR dtype -> C storage type (f16 is stored as its bits and computed in float; bool is one byte 0/1)
CTYPE = {
    "f32": "float", "f64": "double", "f16": "uint16_t",
    "i64": "int64_t", "i32": "int32_t", "i16": "int16_t", "i8": "int8_t",
    "u8": "uint8_t", "u16": "uint16_t", "bool": "uint8_t",
}
# IR dtype -> the C type arithmetic runs in
COMPUTE = {
    "f32": "float", "f64": "double", "f16": "float",
    "i64": "int64_t", "i32": "int32_t", "i16": "int16_t", "i8": "int8_t",
    "u8": "uint8_t", "u16": "uint16_t", "bool": "uint8_t",
}
# unsigned twin of the signed types whose arithmetic must wrap (ONNX/numpy) rather than be UB in C
UNSIGNED = {"i64": "uint64_t", "i32": "uint32_t"}
# .npy descr of each dtype (little-endian, what numpy writes on x86/ARM)
NPY_DESCR = {
    "f32": "<f4", "f64": "<f8", "f16": "<f2", "i64": "<i8", "i32": "<i4", "i16": "<i2",
    "i8": "|i1", "u8": "|u1", "u16": "<u2", "bool": "|b1",
}
DTYPE_CODE = {name: i + 1 for i, name in enumerate(("f32", "f64", "f16", "i64", "i32", "i16", "i8", "u8", "u16",
                                                    "bool"))}
ITEMSIZE = {"f32": 4, "f64": 8, "f16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "u16": 2, "bool": 1}
FLOATS = ("f16", "f32", "f64")
INTS = ("i64", "i32", "i16", "i8", "u8", "u16")


def ctype(dtype: str) -> str:
    try:
        return CTYPE[dtype]
    except KeyError:
        raise TargetError(f"the C backend has no element type for {dtype}") from None


def is_float(dtype: str) -> bool:
    return dtype in FLOATS


def comment_name(name: str, limit: int = 160) -> str:
    """`name` quoted and escaped for use inside a /* */ comment (and nowhere else)."""
    name = str(name)
    cut = len(name) > limit
    if cut:
        name = name[:limit]
    out = []
    for ch in name:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o > 0x7E:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    text = "".join(out).replace("*/", "*\\/").replace("/*", "/\\*")
    while "??" in text:  # trigraphs (C99 translates them even in comments)
        text = text.replace("??", "?\\?")
    return '"' + text + ('"...' if cut else '"')


def comment_text(text: str) -> str:
    """Free text of our own for a comment (defensive: the same neutralisation, no quotes)."""
    text = re.sub(r"[^\x20-\x7e]", "?", str(text)).replace("*/", "* /").replace("/*", "/ *")
    while "??" in text:
        text = text.replace("??", "? ?")
    return text


def identifier(text: str) -> str:
    """A C identifier fragment made of [a-z0-9_] only (for names WE choose, e.g. op kinds)."""
    ident = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")
    return ident or "op"


def int_literal(n: int) -> str:
    n = int(n)
    if -(2 ** 31) < n < 2 ** 31:
        return str(n)
    if -(2 ** 63) < n < 2 ** 63:
        return f"INT64_C({n})"
    raise TargetError(f"integer {n} does not fit in 64 bits")


def float_literal(x: float, ctype_name: str = "float") -> str:
    """An exact C literal for a float / double value (NAN, INFINITY for the special values)."""
    x = float(x)
    suffix = "f" if ctype_name == "float" else ""
    if math.isnan(x):
        return "NAN" if suffix else "(double)NAN"
    if math.isinf(x):
        sign = "-" if x < 0 else ""
        return f"{sign}INFINITY" if suffix else f"{sign}(double)INFINITY"
    if suffix:
        text = f"{np.float32(x).item():.9g}"
    else:
        text = f"{x:.17g}"
    if not re.search(r"[.eE]", text):
        text += ".0"
    return text + suffix


def scalar_literal(value, dtype: str) -> str:
    """A literal of the compute type of `dtype` for a numpy scalar."""
    if dtype in FLOATS:
        return float_literal(float(value), COMPUTE[dtype])
    if dtype == "bool":
        return "1" if bool(value) else "0"
    return int_literal(int(value))
