"""Link-utilisation heatmap: a source x destination matrix of the fabric's nodes, coloured by the mean
utilisation over the simulated steps (bytes carried / (capacity x simulated time), results.link_table).

Server-internal nodes (GPU, PCIe switch, NIC, NVSwitch: named ``n<host>/...``) are folded into their server, so
a server's uplinks are the row of that server and its intra-server links sit on the diagonal; switches stay
individual. Where several links join two groups the busiest one is shown. Large fabrics are binned to at most
``max_cells`` groups per axis (the busiest link per bin), so a single hot link stays visible.
"""

from __future__ import annotations

import math
import re

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from simcluster.analysis.plots import figure, styled

HOST_ROLES = ("gpu", "pcie", "nic", "nvswitch")
ROLE_ORDER = ("host", "gpu", "leaf", "spine", "core")
_PLURAL = {"host": "servers", "leaf": "leaves"}


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _role_from_name(name: str) -> str:
    """The builders' naming: ``n<server>/<part><i>`` inside a server (``n3/nic2``), ``<role>/...`` for switches
    (``leaf/4``, ``spine/p15/3``), ``gpu<i>`` on a torus."""
    parts = name.split("/")
    if len(parts) > 1 and re.fullmatch(r"n\d+", parts[0]):
        return parts[-1].rstrip("0123456789")
    return parts[0].rstrip("0123456789")


def _ends(links: pd.DataFrame, fabric) -> tuple[list[str], list[str], dict[str, str]]:
    """(source names, destination names, role of each node name) of the links table's rows."""
    roles: dict[str, str] = {}
    if fabric is not None:
        by_id = {d["link_id"]: (u, v) for u, v, d in fabric.graph.edges(data=True)}
        pairs = [by_id[int(link)] for link in links["link_id"]]
        src, dst = [str(u) for u, _ in pairs], [str(v) for _, v in pairs]
        roles = {str(node): role for node, role in fabric.graph.nodes(data="role")}
    elif {"src", "dst"} <= set(links.columns):
        src, dst = [str(s) for s in links["src"]], [str(d) for d in links["dst"]]
    else:
        raise ValueError("the links table has no src/dst columns: pass the fabric to resolve link ids")
    for name in src + dst:
        roles.setdefault(name, _role_from_name(name))
    return src, dst, roles


def _group(name: str, role: str) -> tuple[str, str]:
    """(group name, group role): server-internal nodes collapse to their server ``n<k>``."""
    if role in HOST_ROLES and "/" in name:
        return name.split("/")[0], "host"
    return name, role


def matrix(links: pd.DataFrame, fabric=None, column: str = "utilisation"
           ) -> tuple[np.ndarray, list[str], list[tuple[str, int, int]]]:
    """(utilisation matrix of ``column``: the mean ``utilisation`` or the busiest window's ``peak_utilisation``,
    group names, role blocks (role, first index, end index)); NaN where no link."""
    src, dst, roles = _ends(links, fabric)
    src_groups = [_group(name, roles[name]) for name in src]
    dst_groups = [_group(name, roles[name]) for name in dst]
    rank = {role: i for i, role in enumerate(ROLE_ORDER)}
    groups = sorted(set(src_groups) | set(dst_groups), key=lambda g: (rank.get(g[1], len(rank)), g[1], _natural(g[0])))
    index = {group: i for i, group in enumerate(groups)}
    grid = np.full((len(groups), len(groups)), np.nan)
    for s, d, value in zip(src_groups, dst_groups, links[column].to_numpy(float), strict=True):
        i, j = index[s], index[d]
        grid[i, j] = value if np.isnan(grid[i, j]) else max(grid[i, j], value)
    blocks, start = [], 0
    for position in range(1, len(groups) + 1):
        if position == len(groups) or groups[position][1] != groups[start][1]:
            blocks.append((groups[start][1], start, position))
            start = position
    return grid, [g[0] for g in groups], blocks


def _binned(grid: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return grid
    n = grid.shape[0]
    size = math.ceil(n / factor)
    padded = np.full((size * factor, size * factor), np.nan)
    padded[:n, :n] = grid
    blocks = padded.reshape(size, factor, size, factor).transpose(0, 2, 1, 3).reshape(size, size, -1)
    empty = np.all(np.isnan(blocks), axis=2)
    out = np.where(empty, 0.0, np.nanmax(np.where(np.isnan(blocks), -np.inf, blocks), axis=2))
    out[empty] = np.nan
    return out


@styled
def link_utilisation(links: pd.DataFrame, fabric=None, title: str = "Link utilisation", vmax: float | None = None,
                     max_cells: int = 160, column: str = "utilisation") -> Figure:
    """The heatmap (see the module docstring). ``vmax``: top of the colour scale (share it across figures that
    are compared side by side); default: the busiest link of this table. ``column``: ``utilisation`` (mean over
    the step) or ``peak_utilisation`` (over each link's busiest window, ``network.windows``)."""
    fig, ax = figure(width_in=6.8, height_in=5.8)
    if len(links) == 0:
        ax.text(0.5, 0.5, "no link carried traffic", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return fig
    grid, _names, blocks = matrix(links, fabric, column)
    factor = max(1, math.ceil(grid.shape[0] / max_cells))
    shown = _binned(grid, factor)
    top = vmax if vmax is not None else float(np.nanmax(grid))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#f2f2f2")
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=max(top, 1e-12), interpolation="nearest", aspect="equal")
    ax.grid(False)
    centres, labels = [], []
    for role, start, end in blocks:
        lo, hi = start / factor - 0.5, end / factor - 0.5
        centres.append((lo + hi) / 2.0)
        labels.append(f"{_PLURAL.get(role, role + 's')} ({end - start})")
        if start > 0:
            ax.axhline(lo, color="0.5", linewidth=0.6)
            ax.axvline(lo, color="0.5", linewidth=0.6)
    ax.set_xticks(centres, labels, rotation=30, ha="right")
    ax.set_yticks(centres, labels)
    ax.set_xlabel("to (destination node)" + (f", {factor} nodes per cell" if factor > 1 else ""))
    ax.set_ylabel("from (source node)")
    ax.set_title(f"{title}\nbusiest link {float(np.nanmax(grid)):.0%}")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("link utilisation (busy share of the step)" if column == "utilisation" else
                  "peak link utilisation (its busiest window)")
    bar.formatter = PercentFormatter(1.0)
    bar.update_ticks()
    return fig
