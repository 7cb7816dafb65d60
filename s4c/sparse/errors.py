"""Errors raised by the sparse weight formats.

They are `S4CError`s (the CLI prints one line and exits 2) and also `ValueError`s, so library
callers that only know numpy conventions can catch them the usual way.
"""

from s4c.errors import S4CError


class SparseFormatError(S4CError, ValueError):
    """A weight, layout string or array set that a sparse format cannot accept as given."""


class NotNMCompliantError(SparseFormatError):
    """N:M packing without `prune=True` met a group holding more than N nonzeros."""
