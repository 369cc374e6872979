"""Every norm is recognisable without colour: distinct hatches, markers and line styles."""

import matplotlib as mpl
import pytest

from helpers import NORM_STYLES, norm_style, use_book_style


def test_styles_distinguishable_in_greyscale():
    styles = list(NORM_STYLES.values())
    for attribute in ("hatch", "marker", "linestyle", "color", "label"):
        values = [str(getattr(style, attribute)) for style in styles]
        assert len(set(values)) == len(values), attribute


def test_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm"):
        norm_style("weight")


def test_book_style_sets_white_background():
    use_book_style()
    assert mpl.rcParams["figure.facecolor"] == "white"
    assert mpl.rcParams["savefig.facecolor"] == "white"
