"""The calibration's detection-error-tradeoff picture (matplotlib, imported only when asked for)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

from kwsd.errors import OutputError
from kwsd.evaluate.calibration import Choice, Point, frontier


def plot_det(
    points: Sequence[Point],
    chosen: Choice,
    path: str | os.PathLike[str],
    *,
    title: str,
) -> None:
    """A DET plot (miss rate against false accepts per hour) as a PNG: every point of the grid,
    the frontier, the target and the chosen point. Needs matplotlib (not a runtime dependency)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        from kwsd.errors import RuntimeDependencyError

        raise RuntimeDependencyError("--plot needs matplotlib: install matplotlib for --plot") from None
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    try:
        ax.scatter(
            [p.fa_per_hour for p in points],
            [100 * p.miss_rate for p in points],
            s=8,
            color="0.7",
            label="every setting",
        )
        front = frontier(points)
        ax.step(
            [p.fa_per_hour for p in front],
            [100 * p.miss_rate for p in front],
            where="post",
            color="C0",
            label="frontier",
        )
        ax.axvline(chosen.target_fa_per_hour, color="C3", linestyle="--", label="target")
        c = chosen.point
        ax.scatter(
            [c.fa_per_hour],
            [100 * c.miss_rate],
            s=80,
            marker="*",
            color="C3",
            zorder=3,
            label=("chosen: " if chosen.reachable else "closest: ") + c.setting.text(),
        )
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("false accepts per hour")
        ax.set_ylabel("miss rate (%)")
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)  # long file names wrap
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        try:
            fig.savefig(os.fspath(path), format="png")
        except OSError as err:
            raise OutputError(f"{path}: cannot write the plot ({err.strerror or err})") from None
    finally:
        plt.close(fig)
