"""Bundled data: shapes, ranges and a reproducible, disjoint split."""

import pytest
import torch

from helpers import digits, sample_image, sample_image_path


def test_digits_split():
    x_train, y_train, x_test, y_test = digits(test_fraction=0.25, seed=0)
    assert x_train.shape[1:] == (1, 8, 8) and x_test.shape[1:] == (1, 8, 8)
    assert len(x_train) + len(x_test) == 1797
    assert len(x_test) == round(0.25 * 1797)
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    assert set(y_train.tolist()) == set(range(10))
    again = digits(test_fraction=0.25, seed=0)
    assert torch.equal(again[0], x_train) and torch.equal(again[3], y_test)


def test_digits_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.0)


def test_sample_image():
    image = sample_image(size=64)
    assert image.shape[0] == 3 and image.dtype == torch.float32
    assert image.shape[1] == image.shape[2] and 64 <= image.shape[1] <= 128
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert sample_image(size=None).shape[1:] == (600, 512)


def test_missing_sample_image():
    with pytest.raises(FileNotFoundError, match="no sample image"):
        sample_image_path("does_not_exist.png")
