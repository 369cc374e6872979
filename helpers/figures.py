"""The reduction-set figures: the Group Normalization paper's cube view and a sequence view.

The cube (Wu & He 2018, Figure 2) draws an activation of shape (N, C, H·W) with the channels C
to the right, the batch axis N going into the page and the spatial positions H, W (flattened into
one axis) upwards: one sample's slice is the front face. The cells that share one mean and
variance with the front-left top element (n = 0, c = 0) are shaded.
"""

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from .axes import CHANNELS_LAST_LAYER, NORMS, REDUCTION_SETS, reduction_mask
from .style import norm_style

DEPTH_STEP = (0.45, 0.35)  # how far one step along N (into the page) moves a cell right and up
_EDGE = "#555555"
_TITLES = {CHANNELS_LAST_LAYER: "LayerNorm(C), channels last"}


def _cube_mask(norm: str, shape: Sequence[int], num_groups: int | None) -> torch.Tensor:
    """The set shared with element (n=0, c=0, top position) of an (N, C, H·W) tensor."""
    n, c, s = shape
    if norm == "layer":
        return reduction_mask("layer", shape, (0, 0, s - 1), normalized_ndim=2)
    return reduction_mask(norm, shape, (0, 0, s - 1), num_groups=num_groups if norm == "group" else None)


def _style_key(norm: str) -> str:
    return "layer" if norm == CHANNELS_LAST_LAYER else norm


def _cell(ax: Axes, corners, shaded: bool, norm: str, shade: float) -> None:
    style = norm_style(_style_key(norm))
    face = style.color if shaded else "white"
    alpha = shade if shaded else 1.0
    ax.add_patch(Polygon(corners, closed=True, facecolor=face, alpha=alpha, edgecolor=_EDGE, lw=0.6))
    if shaded:  # hatch drawn separately at full opacity so it survives greyscale printing
        ax.add_patch(Polygon(corners, closed=True, fill=False, hatch=style.hatch, edgecolor="black", lw=0.0))


def draw_cube(
    ax: Axes,
    norm: str,
    *,
    shape: Sequence[int] = (4, 6, 5),
    num_groups: int | None = None,
    title: str | None = None,
) -> None:
    """Draw ``norm``'s reduction set on an (N, C, H·W) cube into ``ax``, oriented as the paper's.

    ``norm`` is one of ``REDUCTION_SETS`` (the four norms and ``"layer_channels_last"``);
    ``shape`` is (N, C, number of spatial positions); ``num_groups`` is required for ``"group"``,
    whose group boundaries are drawn as thick lines.
    """
    if norm not in REDUCTION_SETS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {REDUCTION_SETS}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (N, C, H*W) with positive sizes, got {tuple(shape)}")
    if norm == "group" and num_groups is None:
        raise ValueError("group norm needs num_groups")
    n_size, c_size, s_size = (int(k) for k in shape)
    mask = _cube_mask(norm, (n_size, c_size, s_size), num_groups)
    dx, dy = DEPTH_STEP

    # Front face (n = 0): channels to the right, positions upwards.
    for c in range(c_size):
        for s in range(s_size):
            corners = [(c, s), (c + 1, s), (c + 1, s + 1), (c, s + 1)]
            _cell(ax, corners, bool(mask[0, c, s]), norm, 0.85)
    # Top face (top position): channels to the right, batch into the page.
    for n in range(n_size):
        for c in range(c_size):
            x0, y0 = c + n * dx, s_size + n * dy
            corners = [(x0, y0), (x0 + 1, y0), (x0 + 1 + dx, y0 + dy), (x0 + dx, y0 + dy)]
            _cell(ax, corners, bool(mask[n, c, s_size - 1]), norm, 0.6)
    # Right face (last channel): batch into the page, positions upwards.
    for n in range(n_size):
        for s in range(s_size):
            x0, y0 = c_size + n * dx, s + n * dy
            corners = [(x0, y0), (x0 + dx, y0 + dy), (x0 + dx, y0 + dy + 1), (x0, y0 + 1)]
            _cell(ax, corners, bool(mask[n, c_size - 1, s]), norm, 0.45)

    if norm == "group":  # group boundaries run up the front face and back along N on the top face
        per_group = c_size // num_groups
        for g in range(1, num_groups):
            c = g * per_group
            ax.plot([c, c, c + n_size * dx], [0, s_size, s_size + n_size * dy], color="black", lw=2.0)

    ax.annotate("", xy=(c_size, -0.5), xytext=(0, -0.5), arrowprops={"arrowstyle": "->", "lw": 1.0})
    ax.text(c_size / 2, -0.9, "C (channels)", ha="center", va="top", fontsize=9)
    ax.annotate("", xy=(-0.5, s_size), xytext=(-0.5, 0), arrowprops={"arrowstyle": "->", "lw": 1.0})
    ax.text(-0.9, s_size / 2, "H, W (positions)", ha="right", va="center", rotation=90, fontsize=9)
    start = (c_size + 0.3, -0.1)
    end = (c_size + 0.3 + n_size * dx, -0.1 + n_size * dy)
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "lw": 1.0})
    ax.text(end[0] + 0.15, end[1] - 0.2, "N (batch)", ha="left", va="center", fontsize=9)

    ax.set_xlim(-2.2, c_size + n_size * dx + 2.4)
    ax.set_ylim(-1.8, s_size + n_size * dy + 0.4)
    ax.set_aspect("equal")
    ax.axis("off")
    if title is None:
        title = _TITLES.get(norm, norm_style(_style_key(norm)).label)
        title += f" (G = {num_groups})" if norm == "group" else ""
    ax.set_title(title)


def draw_cube_row(
    norms: Sequence[str] = NORMS, shape: Sequence[int] = (4, 6, 5), num_groups: int = 2
) -> Figure:
    """One cube per reduction set, side by side, as in Figure 2 of the Group Normalization paper."""
    fig, axes = plt.subplots(1, len(norms), figsize=(3.25 * len(norms), 3.6), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        draw_cube(ax, norm, shape=shape, num_groups=num_groups if norm == "group" else None)
    fig.suptitle("Shaded: the elements that share one mean and variance", fontsize=12)
    fig.tight_layout()
    return fig


def draw_four_cubes(shape: Sequence[int] = (4, 6, 5), num_groups: int = 2) -> Figure:
    """The four norms side by side, as in Figure 2 of the Group Normalization paper."""
    return draw_cube_row(NORMS, shape=shape, num_groups=num_groups)


def sequence_mask(
    norm: str, shape: Sequence[int], index: Sequence[int], *, num_groups: int | None = None
) -> torch.Tensor:
    """Reduction set on a (B, T, D) sequence tensor, features D playing the role of channels.

    LayerNorm normalizes each token over D (``nn.LayerNorm(D)``); the other norms see the
    sequence as (B, D, T), the layout ``nn.BatchNorm1d``, ``nn.InstanceNorm1d`` and
    ``nn.GroupNorm`` expect, so their sets are computed there and transposed back.
    """
    b, t, d = (int(k) for k in shape)
    if norm == "layer":
        return reduction_mask("layer", (b, t, d), index, normalized_ndim=1)
    ib, it, id_ = index
    mask = reduction_mask(norm, (b, d, t), (ib, id_, it), num_groups=num_groups)
    return mask.permute(0, 2, 1)


def draw_sequence_view(
    ax: Axes,
    norm: str,
    *,
    shape: Sequence[int] = (2, 4, 6),
    num_groups: int | None = None,
    index: Sequence[int] = (0, 1, 0),
    title: str | None = None,
) -> None:
    """Draw a (B, T, D) sequence as a grid — one row per token, one column per feature — with the
    cells that share statistics with the token-feature at ``index`` shaded."""
    b_size, t_size, d_size = (int(k) for k in shape)
    mask = sequence_mask(norm, (b_size, t_size, d_size), index, num_groups=num_groups)
    for b in range(b_size):
        for t in range(t_size):
            row = b * t_size + t
            for d in range(d_size):
                corners = [(d, -row), (d + 1, -row), (d + 1, -row - 1), (d, -row - 1)]
                _cell(ax, corners, bool(mask[b, t, d]), norm, 0.85)
        if b:
            ax.plot([0, d_size], [-b * t_size] * 2, color="black", lw=2.5)
    ax.set_xlim(0, d_size)
    ax.set_ylim(-b_size * t_size, 0)
    ax.set_xticks([d + 0.5 for d in range(d_size)], [str(d) for d in range(d_size)])
    rows = [f"b{b} t{t}" for b in range(b_size) for t in range(t_size)]
    ax.set_yticks([-r - 0.5 for r in range(len(rows))], rows)
    ax.set_xlabel("feature d")
    ax.set_ylabel("token (sample b, position t)")
    ax.grid(False)
    ax.set_aspect("equal")
    if title is None:
        title = norm_style(norm).label + (f" (G = {num_groups})" if norm == "group" else "")
    ax.set_title(title)
