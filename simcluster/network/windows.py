"""Bytes per link over time windows: the bursts a step average hides.

A link's mean utilisation over a step (bytes / (capacity x step)) can read 30% while the link runs full for the
third of the step in which the gradients are reduced. ``LinkWindows`` keeps the bytes each link carried in each of
at most ``WINDOWS`` consecutive windows of equal width; when the run outgrows them, neighbouring windows merge in
pairs and the width doubles, so memory stays bounded (``WINDOWS`` x links) and the final width is between
1/``WINDOWS`` and 2/``WINDOWS`` of the run (at least ``FIRST_WIDTH_S``). ``peak_utilisation`` is, per link, the
utilisation of its busiest window: the figure a step's bursts are judged by.
"""

from __future__ import annotations

import numpy as np

# Windows kept (a power of two, so that merging pairs halves them): 32 resolves a step's phases (forward,
# backward, gradient reduction, optimizer) at 3-6% of its length.
WINDOWS = 32
# Width of the first windows: 100 us, below the shortest collective worth resolving (a design choice).
FIRST_WIDTH_S = 1e-4


class LinkWindows:
    """Bytes per (window, link) of a run, with windows that widen as the run grows."""

    def __init__(self, links: int, first_width_s: float = FIRST_WIDTH_S):
        self.width_s = first_width_s
        self.bytes = np.zeros((WINDOWS, links))
        self.end_s = 0.0
        # rows below this may hold bytes, the others are zero: widening merges only these (a model timing one
        # collective alone writes a row or two, then widens ten times over a 16k-GPU fabric's 200k links)
        self.rows_used = 0

    def _widen_until(self, t_s: float) -> None:
        while t_s > WINDOWS * self.width_s:
            if self.rows_used:
                used = self.rows_used
                half = (used + 1) // 2
                merged = self.bytes[0:used:2] + self.bytes[1:used + 1:2] if used % 2 == 0 else np.concatenate(
                    (self.bytes[0:used - 1:2] + self.bytes[1:used - 1:2], self.bytes[used - 1:used]))
                self.bytes[:half] = merged    # a row paired with a zero row keeps its bytes exactly
                self.bytes[half:used] = 0.0
                self.rows_used = half
            self.width_s *= 2.0

    def extend(self, links: int) -> None:
        """Append ``links`` links that carried nothing yet (the flow model keeps its windows per link class, and
        classes appear as routes are registered)."""
        self.bytes = np.concatenate((self.bytes, np.zeros((WINDOWS, links))), axis=1)

    def add_bytes(self, window: int, links: np.ndarray, link_bytes: np.ndarray) -> None:
        """Add ``link_bytes`` to window ``window`` of ``links`` (distinct link ids)."""
        self.bytes[window, links] += link_bytes
        self.rows_used = max(self.rows_used, window + 1)

    def add(self, start_s: float, end_s: float, links: np.ndarray, bytes_per_s: np.ndarray) -> None:
        """Links ``links`` carried ``bytes_per_s`` each from ``start_s`` to ``end_s``."""
        if end_s <= start_s or not len(links):
            return
        self._widen_until(end_s)
        self.end_s = max(self.end_s, end_s)
        first = int(start_s // self.width_s)
        last = min(int(end_s // self.width_s), WINDOWS - 1)
        for window in range(first, last + 1):
            lo = max(start_s, window * self.width_s)
            hi = min(end_s, (window + 1) * self.width_s)
            if hi > lo:
                self.add_bytes(window, links, bytes_per_s * (hi - lo))

    def peak_utilisation(self, capacity_bytes_per_s: np.ndarray) -> np.ndarray:
        """Per link: bytes of its busiest window / (capacity x window width). The last window counts only the
        part of it the run covered."""
        if self.end_s <= 0:
            return np.zeros(self.bytes.shape[1])
        return _peak_bytes_per_s(self.bytes, self.end_s, self.width_s) / capacity_bytes_per_s


class GatheredWindows:
    """``LinkWindows`` of links grouped in classes whose links all carry the same bytes in every window (the flow
    and analytic models' link classes): the windows of ``by_class`` (one column per class) are read per link through
    ``class_of`` (each link's class, -1: none, nothing carried). The busiest windows are found per class and then
    gathered to the links, the same values as from a per-link table without making it (32 x 1.6 million links,
    0.4 GB, on a 131k-GPU fabric); ``bytes`` makes that table when asked for."""

    def __init__(self, by_class: LinkWindows, class_of: np.ndarray):
        self.width_s, self.end_s, self.rows_used = by_class.width_s, by_class.end_s, by_class.rows_used
        self._by_class = by_class.bytes.copy()   # as they are now: the model goes on adding to its own
        self._class_of = class_of.copy()

    def _gathered(self, per_class: np.ndarray) -> np.ndarray:
        return gathered(per_class, self._class_of)

    @property
    def bytes(self) -> np.ndarray:
        """Bytes per (window, link), as ``LinkWindows.bytes``."""
        return self._gathered(self._by_class)

    def peak_utilisation(self, capacity_bytes_per_s: np.ndarray) -> np.ndarray:
        """``LinkWindows.peak_utilisation``, found per class (a link's busiest window is its class's)."""
        if self.end_s <= 0:
            return np.zeros(len(self._class_of))
        return self._gathered(_peak_bytes_per_s(self._by_class, self.end_s, self.width_s)) / capacity_bytes_per_s


def gathered(per_class: np.ndarray, class_of: np.ndarray) -> np.ndarray:
    """``per_class`` values (last axis: classes) at each link of ``class_of`` (its class, -1: none), zero for links
    of no class."""
    routed = class_of >= 0
    out = np.zeros(per_class.shape[:-1] + (len(class_of),))
    if routed.any():
        out[..., routed] = per_class[..., class_of[routed]]
    return out


def _peak_bytes_per_s(table: np.ndarray, end_s: float, width_s: float) -> np.ndarray:
    """Per column of ``table`` (bytes per window and column, windows of ``width_s`` up to ``end_s`` > 0): the bytes
    of its busiest window per second of it (``LinkWindows.peak_utilisation`` before the capacity)."""
    spans = np.clip(end_s - np.arange(WINDOWS) * width_s, 0.0, width_s)
    used = spans > 0
    # a window covering under a tenth of its width is too short to judge a burst by: fold it into the previous
    rows = np.flatnonzero(used)
    spans_used = spans[used]
    tail = None
    if len(rows) > 1 and spans_used[-1] < 0.1 * width_s:
        rows = rows[:-1]
        last = rows[-1]
        tail = table[last + 1:].sum(axis=0)
        spans_used = spans_used[:-1].copy()
        spans_used[-1] += spans[last + 1:].sum()
    # row by row: no copy of the whole (windows x links) table (400 MB on a 131k-GPU fabric)
    peak = None
    for row, span_s in zip(rows.tolist(), spans_used.tolist(), strict=True):
        carried = table[row] if tail is None or row != rows[-1] else table[row] + tail
        peak = carried / span_s if peak is None else np.maximum(peak, carried / span_s)
    return peak
