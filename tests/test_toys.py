"""The 2-D toys (issue 10): the data hold every mode, the quality count by hand, a collapsed sample is caught."""

import math

import torch

from robustrep import toys


def test_real_toy_samples_cover_every_mode_with_high_quality():
    for make, modes in ((toys.ring, 8), (toys.grid, 25)):
        X, centres, std = make(2500)
        covered, share = toys.mode_quality(X, centres, std)
        # a 2-D Gaussian's radius is Rayleigh: P(r <= 3 std) = 1 - exp(-9 / 2)
        assert covered == modes and abs(share - (1 - math.exp(-4.5))) < 0.006
        torch.testing.assert_close(toys.from_unit(toys.to_unit(X)), X)


def test_a_collapsed_or_blurred_sample_is_caught():
    X, centres, std = toys.ring(2500)
    collapsed = X[(X - centres[0]).norm(dim=1) < 0.1]
    covered, share = toys.mode_quality(collapsed, centres, std)
    assert covered == 1 and share > 0.95
    blurred = X + 0.5 * torch.randn_like(X)
    covered, share = toys.mode_quality(blurred, centres, std)
    assert share < 0.05


def test_counts_by_hand():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    points = torch.tensor([[0.0, 0.1]] * 3 + [[10.0, 0.05]] + [[5.0, 5.0]])
    assert toys.mode_quality(points, centres, std=0.1, min_count=2) == (1, 0.8)
    assert toys.mode_quality(points, centres, std=0.1, min_count=1) == (2, 0.8)
