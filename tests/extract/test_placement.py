"""2 Hz placement and media chunking against hand-computed values."""

import numpy as np
import pytest

from nforge_jax.extract.placement import chunk_spans, place


def test_place_rows():
    grid = np.zeros((10, 1))
    place(grid, 12.39 - 10, 0.3, 1.0)      # round(4.78) = 5, n = max(1, round(0.6)) = 1
    place(grid, 1.25, 1.1, 10.0)           # round(2.5) = 2 (half to even), n = round(2.2) = 2 -> rows 2, 3
    place(grid, 4.6, 0.1, 100.0)           # round(9.2) = 9, n = max(1, round(0.2)) = 1
    place(grid, 4.9, 3.0, 1000.0)          # round(9.8) = 10: past the grid, dropped
    np.testing.assert_array_equal(grid[:, 0], [0, 0, 10, 10, 0, 1, 0, 0, 0, 100])


@pytest.mark.parametrize("duration,expected", [
    (50, [(0, 50)]), (60, [(0, 60)]), (70, [(0, 70)]), (100, [(0, 60), (60, 40)]),
    (150, [(0, 60), (60, 60), (120, 30)]), (200, [(0, 60), (60, 60), (120, 80)]),
])
def test_chunks_like_tribe(duration, expected):
    assert chunk_spans(duration) == [(float(a), float(b)) for a, b in expected]
