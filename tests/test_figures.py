"""The cube and sequence figures shade exactly the reduction set, with titles and labels."""

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from helpers import draw_cube, draw_four_cubes, draw_sequence_view, measured_reduction_mask, sequence_mask
from helpers.figures import draw_cube_row
from helpers.style import norm_style


def shaded_cells(ax, norm):
    """Cells drawn filled with the norm's colour (the hatch overlays are unfilled)."""
    color = plt.matplotlib.colors.to_rgb(norm_style(norm).color)
    return [p for p in ax.patches if p.get_fill() and p.get_facecolor()[:3] == pytest.approx(color)]


@pytest.mark.parametrize(
    "norm,num_groups,expected",
    # visible shaded cells on the (N=4, C=6, HW=5) cube, C to the right and N into the page:
    # front face (n = 0) + top face (top position) + right face (c = 5)
    [
        ("batch", None, 5 + 4 + 0),
        ("layer", None, 30 + 6 + 5),
        ("instance", None, 5 + 1 + 0),
        ("group", 2, 15 + 3 + 0),
        ("group", 3, 10 + 2 + 0),
        ("layer_channels_last", None, 6 + 6 + 1),
    ],
)
def test_cube_shades_the_visible_part_of_the_set(norm, num_groups, expected):
    fig, ax = plt.subplots()
    draw_cube(ax, norm, shape=(4, 6, 5), num_groups=num_groups)
    style_key = "layer" if norm == "layer_channels_last" else norm
    assert len(shaded_cells(ax, style_key)) == expected
    assert ax.get_title().startswith(norm_style(style_key).label)
    texts = {t.get_text() for t in ax.texts}
    assert {"C (channels)", "H, W (positions)", "N (batch)"} <= texts
    plt.close(fig)


def test_four_cubes_have_four_titles():
    fig = draw_four_cubes()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm (G = 2)"]
    plt.close(fig)


def test_cube_row_adds_the_channels_last_layer_norm():
    fig = draw_cube_row(("batch", "layer", "instance", "group", "layer_channels_last"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[-1] == "LayerNorm(C), channels last" and len(titles) == 5
    plt.close(fig)


def test_layer_set_fills_the_front_face_as_in_the_paper():
    """Figure 2 of Wu & He: N runs into the page, so one sample (LayerNorm's set) is the front face
    and BatchNorm's set (one channel across the batch) is a slab running back into the page."""
    fig, ax = plt.subplots()
    draw_cube(ax, "layer", shape=(3, 4, 2))
    front = [p for p in shaded_cells(ax, "layer") if all(x <= 4 and y <= 2 for x, y in p.get_xy())]
    assert len(front) == 4 * 2
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_cube(ax, "batch", shape=(3, 4, 2))
    front = [p for p in shaded_cells(ax, "batch") if all(x <= 4 and y <= 2 for x, y in p.get_xy())]
    assert len(front) == 2  # one channel's column of the front face; the rest lies behind it
    plt.close(fig)


@pytest.mark.parametrize("bad", [dict(norm="batch", shape=(4, 6)), dict(norm="rms"), dict(norm="group")])
def test_cube_rejects_bad_arguments(bad):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError):
        draw_cube(ax, **bad)
    plt.close(fig)


def test_sequence_masks_match_torch():
    b, t, d = 2, 4, 6
    index = (1, 2, 3)
    assert torch.equal(
        sequence_mask("layer", (b, t, d), index), measured_reduction_mask(nn.LayerNorm(d), (b, t, d), index)
    )

    class ChannelsLast(nn.Module):
        """Apply a (B, D, T) norm to a (B, T, D) sequence, the usual way to use it on tokens."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.transpose(1, 2)).transpose(1, 2)

    for norm, module, groups in [
        ("batch", nn.BatchNorm1d(d), None),
        ("instance", nn.InstanceNorm1d(d), None),
        ("group", nn.GroupNorm(3, d), 3),
    ]:
        measured = measured_reduction_mask(ChannelsLast(module), (b, t, d), index)
        assert torch.equal(sequence_mask(norm, (b, t, d), index, num_groups=groups), measured), norm


def test_sequence_view_is_labelled_and_shades_one_token_for_layer_norm():
    fig, ax = plt.subplots()
    draw_sequence_view(ax, "layer", shape=(2, 4, 6))
    assert len(shaded_cells(ax, "layer")) == 6
    assert ax.get_xlabel() == "feature d" and ax.get_ylabel().startswith("token")
    assert ax.get_title() == "LayerNorm"
    plt.close(fig)
