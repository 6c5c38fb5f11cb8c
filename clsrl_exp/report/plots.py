"""Figures as PNG bytes (matplotlib, Agg backend, no pyplot state): transfer heatmaps and training curves."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clsrl_exp.report.tables import dataset_sort_key, method_sort_key  # noqa: E402


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def heatmap_png(matrix: pd.DataFrame, title: str) -> bytes:
    """Annotated heatmap of a transfer matrix (rows = train, columns = eval + AVG), diverging colours centred at 0;
    NaN cells are grey and read "n/a"."""
    values = matrix.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(max(4.0, 0.85 * n_cols + 2.5), max(3.0, 0.55 * n_rows + 1.8)))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            text = "n/a" if math.isnan(v) else f"{v:.2f}"
            dark = not math.isnan(v) and abs(v) > 0.6 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(n_cols), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(n_rows), [str(r) for r in matrix.index])
    ax.set_xlabel("evaluation dataset")
    ax.set_ylabel("fine-tuning dataset")
    ax.set_title(title)
    if "AVG" in matrix.columns and n_cols > 1:
        ax.axvline(n_cols - 1.5, color="black", linewidth=1.0)
    fig.colorbar(im, ax=ax, label="accuracy − zero-shot (pp)")
    return _png(fig)


def curves_png(curves: pd.DataFrame) -> bytes:
    """Held-out accuracy vs step: one panel per (model, setting, training dataset), one line per method
    (mean over seeds; individual seeds faint). Only points evaluated on the training dataset itself are drawn
    when there are any, else every point."""
    df = curves.copy()
    own = df[df["eval_dataset"] == df["dataset"]]
    df = own if not own.empty else df
    panels = sorted(df.groupby(["model", "setting", "dataset"]).groups,
                    key=lambda k: (k[0], k[1], dataset_sort_key(k[2])))
    n = max(1, len(panels))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows))
    methods = sorted(df["method"].unique(), key=method_sort_key)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for idx, (model, setting, dataset) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, idx + 1)
        sub = df[(df["model"] == model) & (df["setting"] == setting) & (df["dataset"] == dataset)]
        for method in sorted(sub["method"].unique(), key=method_sort_key):
            m = sub[sub["method"] == method]
            for _, seed_df in m.groupby("seed", dropna=False):
                s = seed_df.groupby("step")["accuracy"].mean()
                ax.plot(s.index, s.values, color=colors[method], alpha=0.25, linewidth=0.8)
            mean = m.groupby("step")["accuracy"].mean()
            ax.plot(mean.index, mean.values, color=colors[method], marker="o", markersize=3, label=method)
        ax.set_title(f"{dataset} ({setting}, {model})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
