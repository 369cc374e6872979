"""One plotting style for the whole book: readable in print, in greyscale and in dark mode.

Every norm has a fixed colour, hatch, marker and line style, so that a figure in one chapter
reads like the same norm's figure in another. Colours are from the Okabe–Ito palette (safe for
colour-blind readers) and are paired with hatches and line styles that survive greyscale printing.
"""

from dataclasses import dataclass

import matplotlib as mpl


@dataclass(frozen=True)
class NormStyle:
    """How one norm is drawn: a colour plus cues that do not rely on colour."""

    label: str
    color: str
    hatch: str
    marker: str
    linestyle: str


NORM_STYLES: dict[str, NormStyle] = {
    "none": NormStyle("no norm", "#000000", "", "x", ":"),
    "batch": NormStyle("BatchNorm", "#0072B2", "//", "o", "-"),
    "layer": NormStyle("LayerNorm", "#E69F00", "\\\\", "s", "--"),
    "instance": NormStyle("InstanceNorm", "#009E73", "xx", "^", "-."),
    "group": NormStyle("GroupNorm", "#CC79A7", "..", "D", (0, (5, 1, 1, 1))),
    "rms": NormStyle("RMSNorm", "#D55E00", "++", "v", (0, (1, 1))),
}

# Colours for figures that are not about one norm (e.g. float32 vs float64 curves).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000"]


def norm_style(norm: str) -> NormStyle:
    """The style of ``norm`` (one of ``NORM_STYLES``), with a clear error for an unknown name."""
    try:
        return NORM_STYLES[norm]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; expected one of {sorted(NORM_STYLES)}") from None


def use_book_style() -> None:
    """Apply the book's matplotlib style: white figure background (readable in dark mode),
    colour-blind-safe colour cycle, moderate size and resolution so stored notebooks stay small."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 90,
            "savefig.dpi": 90,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "axes.facecolor": "white",
            "axes.edgecolor": "#333333",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.framealpha": 0.9,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "image.cmap": "viridis",
            "hatch.linewidth": 0.6,
        }
    )
