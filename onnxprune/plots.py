"""PNG plots of a sensitivity table and of accuracy (or drift) against measured speedup.

matplotlib is optional (``pip install onnxprune[plot]``): only drawing needs
it, and a missing install is a one-line error, not a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from onnxprune.errors import InputError

MAX_LABELLED_GROUPS = 12
"""Groups beyond this many (the most sensitive are kept) are drawn without a legend entry."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        raise InputError("drawing plots needs matplotlib: pip install 'onnxprune[plot]'") from None
    return pyplot


def plot_sensitivity(table: Mapping[str, Any], path: str | os.PathLike, title: str = "drift per channel group") -> None:
    """Drift against the fraction of each group's channels cut (one line per group), from a table's ``to_dict()``."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    groups = sorted(table["groups"], key=lambda group: -max(level["drift"] for level in group["levels"]))
    for rank, group in enumerate(groups):
        cut = [0.0, *(1 - level["keep"] / group["channels"] for level in group["levels"])]
        drift = [0.0, *(level["drift"] for level in group["levels"])]
        label = f"{group['name']} ({group['channels']})" if rank < MAX_LABELLED_GROUPS else None
        axes.plot(cut, drift, marker="o", markersize=3, linewidth=1, label=label, alpha=1.0 if label else 0.35)
    axes.set_xlabel("share of the group's channels cut")
    axes.set_ylabel("output drift (relative L2, held-out data)")
    axes.set_yscale("symlog", linthresh=1e-3)
    axes.set_title(title)
    axes.legend(fontsize=6, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_tradeoff(
    curves: Mapping[str, Sequence[tuple[float, float]]], baseline: float | None, path: str | os.PathLike, title: str, metric: str
) -> None:
    """``metric`` against measured speedup, one line per method (points sorted by speedup), the original as a dashed line."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for method, points in curves.items():
        ordered = sorted(points)
        axes.plot([speed for speed, _ in ordered], [value for _, value in ordered], marker="o", label=method)
    if baseline is not None:
        axes.axhline(baseline, linestyle="--", color="grey", linewidth=1, label="original")
    axes.set_xlabel("measured speedup (x)")
    axes.set_ylabel(metric)
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
