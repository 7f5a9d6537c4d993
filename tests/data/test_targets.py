import numpy as np
import pytest

from nforge_jax.data.store import PipelineError
from nforge_jax.data.targets import clean_and_resample


# ------------------------------------------------------------------------------------------------
# fMRI cleaning


def reference_clean(bold, tr):
    from nilearn.signal import clean

    x = clean(bold.astype(np.float64), detrend=True, standardize="zscore_sample", ensure_finite=True,
              t_r=tr, low_pass=None, high_pass=None)
    n = bold.shape[0]
    t_new = np.arange(0, (n - 1) * tr + tr - 1)  # stop excluded, as neuralset does
    return np.stack([np.interp(t_new, np.arange(n) * tr, x[:, j]) for j in range(x.shape[1])], axis=1)


@pytest.mark.parametrize("tr, n, expected_len", [(1.49, 592, 882), (2.0, 30, 59), (1.75, 11, 19), (1.0, 5, 4)])
def test_clean_and_resample_matches_nilearn(tr, n, expected_len):
    rng = np.random.default_rng(0)
    bold = rng.standard_normal((n, 9)) * 3 + np.linspace(0, 5, n)[:, None] + 100
    bold[:, 2] = 7.0  # constant vertex -> zeros
    bold[3, 4] = np.nan  # non-finite -> treated as 0 before cleaning
    out = clean_and_resample(bold.astype(np.float32), tr, chunk=4)
    assert out.shape == (expected_len, 9) and out.dtype == np.float32
    ref = reference_clean(bold, tr)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
    assert np.all(out[:, 2] == 0)
    # beyond the last acquisition: the last value
    assert out[-1, 0] == pytest.approx(ref[-1, 0], abs=1e-5)


def test_clean_and_resample_errors():
    with pytest.raises(PipelineError, match="2 dimensions"):
        clean_and_resample(np.zeros(5), 1.0)
    with pytest.raises(PipelineError, match="tr_s"):
        clean_and_resample(np.zeros((5, 2)), 0)
    with pytest.raises(PipelineError, match="at least 2"):
        clean_and_resample(np.zeros((1, 2)), 1.0)


# ------------------------------------------------------------------------------------------------
# Window contents
