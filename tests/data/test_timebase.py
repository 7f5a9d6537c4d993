"""The time base against hand-computed values."""

import numpy as np
import pytest

from nforge_jax.data.timebase import align_targets, cut_windows, feature_row, n_windows, output_rows, target_index


def test_rows_and_windows():
    assert feature_row(12.39) == 25 and feature_row(1.25) == 2  # round(24.78); round(2.5) = 2 (half to even)
    assert n_windows(0, 200) == 1 and n_windows(200, 200) == 1 and n_windows(201, 200) == 2
    assert output_rows(200, 200, 100) == 100 and output_rows(7, 200, 100) == 4 and output_rows(450, 200, 100) == 225
    x = np.arange(5, dtype=np.float32)[:, None]
    w = cut_windows({"text": x}, 2)["text"]
    assert w.shape == (3, 2, 1) and w[:, :, 0].tolist() == [[0, 1], [2, 3], [4, 0]]
    assert cut_windows({"text": x}, 2, n_win=4)["text"][3].sum() == 0


def test_targets_lag_by_the_offset():
    # row j of a timeline starting at 10 s is stimulus time 10 + j; its target is recorded at 10 + j + 5 s;
    # the recording's first sample is stimulus time 12 s -> sample 3 + j
    assert target_index(10.0, fmri_start_s=12.0) == 3
    fmri = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    y, mask = align_targets(fmri, 6, start_s=10.0, fmri_start_s=12.0)
    assert mask.tolist() == [True] * 5 + [False] and y[:, 0].tolist() == [3, 4, 5, 6, 7, 0]
    with pytest.raises(ValueError, match="fmri_hz"):
        align_targets(fmri, 2, fmri_hz=0.5)


def test_a_half_second_shift_is_rounded_once():
    fmri = np.arange(10, dtype=np.float32)[:, None]
    y, _ = align_targets(fmri, 4, start_s=0.0, fmri_start_s=0.5)  # round(4.5) = 4, then consecutive samples
    assert y[:, 0].tolist() == [4, 5, 6, 7]
