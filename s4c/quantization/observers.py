"""Calibration observers: each watches one activation tensor over the calibration samples and gives
the clip threshold `amax` its symmetric int8 scale is made from (scale = amax / 127).

    minmax      amax = max |x| seen (nothing clipped; outliers stretch the scale)
    percentile  amax = the `percentile`-th percentile of |x| (default 99.99): the rare outliers clip
    entropy     amax = the threshold whose 127-level quantisation of the |x| histogram loses the least
                information (smallest KL divergence from the clipped reference distribution; the
                TensorRT / S4 SDK "KL" method)

    obs = make_observer("percentile")
    for sample in samples: obs.observe(activation)
    obs.amax()

Percentile and entropy keep a histogram of |x| (2048 bins over [0, max seen]); when a later sample
exceeds the range, the counts are spread onto the wider bins (linear interpolation of the cumulative
counts), so memory stays constant however many samples are observed.
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "entropy")
HIST_BINS = 2048
QUANT_LEVELS = 128  # |q| in 0..127: the levels the positive half of symmetric int8 has


class Observer:
    """Tracks min / max of every array it observes; subclasses decide `amax`."""

    method = ""

    def __init__(self):
        self.min = np.inf
        self.max = -np.inf
        self.count = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        if x.size == 0:
            return
        finite = x[np.isfinite(x)] if not np.isfinite(x).all() else x
        if finite.size == 0:
            return
        self.min = min(self.min, float(finite.min()))
        self.max = max(self.max, float(finite.max()))
        self.count += finite.size
        self._observe(finite)

    def _observe(self, x: np.ndarray) -> None:
        pass

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def amax(self) -> float:
        """The clip threshold: quantise |x| <= amax onto -127..127."""
        return self.absmax

    def summary(self) -> dict:
        return {"method": self.method, "min": self.min if self.count else 0.0,
                "max": self.max if self.count else 0.0, "amax": self.amax()}


class MinMaxObserver(Observer):
    """amax = max |x| over everything observed."""

    method = "minmax"


class HistogramObserver(Observer):
    """Keeps a histogram of |x| over [0, edge] (edge = max |x| seen), re-binned as the range grows."""

    def __init__(self, bins: int = HIST_BINS):
        super().__init__()
        self.bins = bins
        self.hist = np.zeros(bins, np.float64)
        self.edge = 0.0

    def _observe(self, x: np.ndarray) -> None:
        a = np.abs(x).ravel()
        top = float(a.max())
        if top > self.edge:
            self._widen(top)
        if self.edge == 0.0:  # all zeros so far: everything in the first bin
            self.hist[0] += a.size
            return
        counts, _ = np.histogram(a, self.bins, (0.0, self.edge))
        self.hist += counts

    def _widen(self, edge: float) -> None:
        """Spread the counts onto `bins` bins over [0, edge] (edge > the current edge)."""
        if self.edge > 0.0 and self.hist.any():
            old_edges = np.linspace(0.0, self.edge, self.bins + 1)
            cdf = np.concatenate([[0.0], np.cumsum(self.hist)])
            new_edges = np.linspace(0.0, edge, self.bins + 1)
            self.hist = np.diff(np.interp(new_edges, old_edges, cdf))
        elif self.hist.any():  # only zeros seen (edge 0): they stay in the first bin
            pass
        self.edge = edge

    @property
    def bin_width(self) -> float:
        return self.edge / self.bins


class PercentileObserver(HistogramObserver):
    """amax = the `percentile`-th percentile of |x| (interpolated inside its histogram bin)."""

    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = HIST_BINS):
        super().__init__(bins)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], not {percentile}")
        self.percentile = percentile

    def amax(self) -> float:
        total = self.hist.sum()
        if total == 0 or self.edge == 0.0:
            return self.absmax
        cdf = np.concatenate([[0.0], np.cumsum(self.hist)])
        edges = np.linspace(0.0, self.edge, self.bins + 1)
        target = total * self.percentile / 100.0
        return float(min(np.interp(target, cdf, edges), self.absmax))


class EntropyObserver(HistogramObserver):
    """amax minimising KL(P || Q): P = the |x| histogram cut at a candidate threshold (the counts
    beyond it added to its last bin, where clipping puts them), Q = P quantised onto 128 levels (each
    level's count spread evenly over the bins it covers where P is nonzero; Q is made from the
    histogram without the clipped counts, so clipping too much costs). Empty bins of Q where P is
    not are smoothed to 1e-4 (as TensorRT / onnxruntime do). Candidates: every bin
    edge from 128 bins up, every `stride` bins (4: the threshold to 0.2% of the range seen)."""

    method = "entropy"

    def __init__(self, bins: int = HIST_BINS, stride: int = 4):
        super().__init__(bins)
        self.stride = stride

    def amax(self) -> float:
        if self.hist.sum() == 0 or self.edge == 0.0:
            return self.absmax
        i = best_kl_threshold_bin(self.hist, QUANT_LEVELS, self.stride)
        return float(min(i * self.bin_width, self.absmax))


def _kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """KL(p || q) of two histograms (normalised here); q's empty bins where p is not get `eps`."""
    if q.sum() == 0:
        return np.inf
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    q = np.where(mask & (q == 0), eps, q)
    q = q / q.sum()
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def best_kl_threshold_bin(hist: np.ndarray, levels: int = QUANT_LEVELS, stride: int = 1) -> int:
    """The number of histogram bins i (levels <= i <= len(hist)) whose cut-off minimises the KL
    divergence between the clipped distribution and its `levels`-level quantisation."""
    n = len(hist)
    if n <= levels:
        return n
    best_i, best_kl = n, np.inf
    total_beyond = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # sum of hist[i:]
    for i in range(levels, n + 1, stride):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += total_beyond[i]
        if p.sum() == 0:
            continue
        # merge the i bins into `levels` groups, then spread each group's count over its nonzero bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        sums = np.bincount(groups, weights=hist[:i], minlength=levels)
        nonzero = np.bincount(groups, weights=(p > 0).astype(np.float64), minlength=levels)
        per_bin = np.divide(sums, nonzero, out=np.zeros(levels), where=nonzero > 0)
        q = np.where(p > 0, per_bin[groups], 0.0)
        kl = _kl(p, q)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def make_observer(method: str, percentile: float = 99.99) -> Observer:
    """An observer for calibration `method` (one of METHODS)."""
    if method == "minmax":
        return MinMaxObserver()
    if method == "percentile":
        return PercentileObserver(percentile)
    if method == "entropy":
        return EntropyObserver()
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
