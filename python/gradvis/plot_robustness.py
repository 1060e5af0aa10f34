"""The security curve: robust accuracy against the budget, per attack and in the
worst case, with the signs of gradient masking written under it."""
from __future__ import annotations

import numpy as np

__all__ = ["security_curve"]

# attacks drawn dashed: one-step and black-box ones (the baselines)
_BASELINES = ("fgsm", "noise")


def security_curve(table, title=None, path=None, figsize=(6.4, 4.4)):
    """Robust accuracy against eps (grey levels) from a
    :func:`gradvis.attacks.robust_accuracy` table (Carlini et al. 2019, "On
    evaluating adversarial robustness", section 5.2: the security curve).

    One line per attack (one-step and random-noise baselines dashed), the worst
    case over attacks in black, the clean accuracy at eps 0; the warnings of
    :func:`gradvis.attacks.gradient_masking_signs` (table['warnings']) are written
    in red below the axes, or "no sign of gradient masking" when there are none.

    Args:
        table: the dict robust_accuracy returns (or its JSON, 'robust' not needed).
        title: the axes title (default: the norm and the number of images).
        path: also write the figure there (:func:`gradvis.plot.save_figure`).
        figsize: inches.

    Returns:
        the matplotlib Figure.
    """
    if not isinstance(table, dict):
        raise TypeError(f"table must be the dict robust_accuracy returns, got {type(table).__name__}")
    missing = [k for k in ("eps", "accuracy", "worst_case", "clean_accuracy") if k not in table]
    if missing:
        raise ValueError(f"table lacks {', '.join(missing)}: pass what robust_accuracy returns")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    eps = np.asarray(table["eps"], np.float64)
    warnings = list(table.get("warnings", []))
    fig = Figure(figsize=(figsize[0], figsize[1] + 0.22 * max(len(warnings), 1)))
    FigureCanvasAgg(fig)
    bottom = (0.16 + 0.05 * max(len(warnings), 1)) / (1 + 0.05 * max(len(warnings), 1))
    ax = fig.add_axes([0.11, bottom, 0.62, 0.88 - bottom])
    x0 = np.concatenate([[0.0], eps])
    clean = float(table["clean_accuracy"])
    for name, acc in table["accuracy"].items():
        style = "--" if name in _BASELINES else "-"
        ax.plot(x0, np.concatenate([[clean], acc]), style, marker="o", ms=3, lw=1.2, label=name)
    ax.plot(x0, np.concatenate([[clean], table["worst_case"]]), "-", color="black", lw=2.4,
            marker="s", ms=4, label="worst case")
    ax.set_xlabel(f"eps, grey levels (0-255), {_norm_label(table.get('norm'))}")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, eps.max() * 1.03 if eps.size and eps.max() > 0 else 1)
    ax.grid(alpha=0.3)
    if title is None:
        n = table.get("n_images")
        title = (f"security curve, {_norm_label(table.get('norm'))}"
                 + (f", {n} images" if n is not None else "")
                 + (", targeted" if table.get("targeted") else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if warnings:
        text = "\n".join(f"gradient masking? {w}" for w in warnings)
        color = "tab:red"
    else:
        text, color = "no sign of gradient masking in these attacks", "tab:green"
    fig.text(0.02, 0.02, text, color=color, fontsize=7.5, va="bottom", ha="left", wrap=True)
    if path is not None:
        from .plot import save_figure
        save_figure(fig, path)
    return fig


def _norm_label(norm):
    return {"inf": "L-inf", "2": "L2", "1": "L1"}.get(norm, str(norm))
