"""One colour and one label per method, shared by every plot of the benchmarks.

The paper's colours where it fixes them (vanilla grey, ReDo pink, ReGraMa orange, a fresh network blue);
the other methods take distinct colours of matplotlib's tab20 palette, variants of a method a shade of its
colour. Names are plain colour strings so that this module needs no matplotlib.
"""

from __future__ import annotations

COLORS: dict[str, str] = {
    "vanilla": "#7f7f7f",  # tab:gray
    "redo": "#e377c2",  # tab:pink
    "regrama": "#ff7f0e",  # tab:orange
    "fresh": "#1f77b4",  # tab:blue
    "cbp": "#2ca02c",  # tab:green
    "reborn": "#9467bd",  # tab:purple
    "snp": "#8c564b",  # tab:brown
    "l2init": "#17becf",  # tab:cyan
    "prune-grama": "#ffbb78",  # light orange: pruning by GraMa
    "prune-redo": "#f7b6d2",  # light pink: pruning by ReDo
    "regrama+l2init": "#d62728",  # tab:red
    "regrama+wd": "#bcbd22",  # tab:olive
    "regrama+l2init+wd": "#393b79",  # dark blue
}
"""Colour of each method (hex strings, all distinct)."""

LABELS: dict[str, str] = {
    "vanilla": "Vanilla",
    "redo": "ReDo",
    "regrama": "ReGraMa",
    "fresh": "Fresh network",
    "cbp": "CBP",
    "reborn": "ReBorn",
    "snp": "S&P",
    "l2init": "L2 Init",
    "prune-grama": "Pruning (GraMa)",
    "prune-redo": "Pruning (ReDo)",
    "regrama+l2init": "ReGraMa + L2 Init",
    "regrama+wd": "ReGraMa + WD",
    "regrama+l2init+wd": "ReGraMa + L2 Init + WD",
}
"""Legend label of each method, as the paper writes it."""


def color(method: str) -> str:
    """Colour of ``method``.

    Args:
        method: a method name of :data:`COLORS`.

    Returns:
        Its colour as a hex string.

    Raises:
        KeyError: naming the unknown method and the known ones (add it to ``COLORS`` to plot it).

    Example:
        >>> color("regrama")
        '#ff7f0e'
    """
    try:
        return COLORS[method]
    except KeyError:
        raise KeyError(
            f"no colour for method {method!r}; known: {sorted(COLORS)}. Add it to benchmarks/harness/style.py."
        ) from None


def label(method: str) -> str:
    """Legend label of ``method`` (the name itself for a method without one).

    Args:
        method: a method name.

    Returns:
        Its label.

    Example:
        >>> label("snp")
        'S&P'
    """
    return LABELS.get(method, method)
