"""Seeding in one call makes every generator repeat itself."""

import random

import numpy as np
import pytest
import torch

from helpers import seed_everything


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_numbers():
    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert draw() != first


def test_returned_generator_is_seeded():
    a = torch.rand(3, generator=seed_everything(7))
    b = torch.rand(3, generator=seed_everything(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)


def test_one_thread_whatever_the_machine():
    torch.set_num_threads(2)
    seed_everything(0)
    assert torch.get_num_threads() == 1
