"""The coordinate check's plot: mean |output| of each kind of layer against width, a panel per step."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from lmx.scaling.plot import save, styled

KINDS = ("embedding", "attn", "mlp", "residual", "logits")


def _kind_value(layers: Mapping[str, float], kind: str) -> float:
    """A kind's value: the mean over layers for attention and MLP outputs, the last block's residual."""
    if kind in ("embedding", "logits"):
        return layers[kind]
    if kind == "residual":
        last = max(int(k.split("/")[0].split("_")[1]) for k in layers if k.endswith("/residual"))
        return layers[f"layer_{last}/residual"]
    return float(np.mean([v for k, v in layers.items() if k.endswith(f"/{kind}")]))


@styled
def plot_coord_check(
    means: Mapping[tuple[Any, int], Mapping[str, float]],
    parametrization: str,
    depth: int,
    verdict: Mapping[str, Any],
    out: str | Path,
) -> Path:
    """`means`: (shape, step) -> layer -> mean |output| (lmx.scaling.coord_check.seed_means)."""
    steps = sorted({step for _, step in means})
    widths = sorted({shape.width for shape, _ in means})
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.4), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    by_width = {(shape.width, step): layers for (shape, step), layers in means.items()}
    for ax, step in zip(axes[0], steps, strict=True):
        for i, kind in enumerate(KINDS):
            ys = [_kind_value(by_width[(w, step)], kind) for w in widths]
            ax.plot(widths, ys, marker="o", color=colors(i), label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {step}")
        ax.set_xlabel("width (d_model)")
    axes[0][0].set_ylabel("mean |output|")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    result = "PASS" if verdict["pass"] else f"FAIL ({verdict['failures']} ratios outside 1/1.2 .. 1.2)"
    fig.suptitle(f"coordinate check: {parametrization}, {depth} layers: {result}")
    return save(fig, out)
