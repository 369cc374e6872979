"""Small data that ships inside installed packages, so nothing is downloaded at run time."""

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.image import imread


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 handwritten digits as (N, 1, 8, 8) float32 images in [0, 1].

    Returns ``(x_train, y_train, x_test, y_test)``, split once with a seeded permutation and
    stratified by nothing but chance (the 1,797 images are near-balanced over the ten digits).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def sample_image_path(name: str = "grace_hopper.jpg") -> Path:
    """Path of an image in matplotlib's bundled sample data."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    if not path.is_file():
        raise FileNotFoundError(f"matplotlib ships no sample image {name!r} (looked in {path.parent})")
    return path


def sample_image(name: str = "grace_hopper.jpg", size: int | None = 128) -> torch.Tensor:
    """An RGB sample image from matplotlib as a float32 (3, H, W) tensor with values in [0, 1].

    ``size`` crops the image to a centred square and subsamples it to about ``size`` pixels a
    side (by striding, so no interpolation library is needed); ``None`` keeps the full image.
    """
    array = imread(sample_image_path(name))
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array[..., :3]  # drop an alpha channel if present
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        height, width = array.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        stride = max(1, side // size)
        array = array[top : top + side : stride, left : left + side : stride]
    return torch.tensor(np.ascontiguousarray(array), dtype=torch.float32).permute(2, 0, 1).contiguous()
