import numpy as np
import pytest

from nforge_jax.insilico.response import summarise_response


def test_mean_std_and_windows():
    x = np.arange(20.0)[:, None] * np.array([[1.0, -2.0]])
    assert np.allclose(summarise_response(x), [9.5, -19.0])
    assert np.allclose(summarise_response(x, how="std"), np.std(np.arange(20.0)) * np.array([1.0, 2.0]))
    # rows at 5, 6, ... 9 s (start included, end excluded)
    assert np.allclose(summarise_response(x, window=(5, 10)), [7.0, -14.0])
    # TR 2 s: rows at 0, 2, 4 ... s; a window from 5 s to 11 s holds the rows at 6, 8 and 10 s
    assert np.allclose(summarise_response(x, tr_s=2.0, window=(5, 11)), [4.0, -8.0])
    assert np.allclose(summarise_response(x, window=(0, 20)), summarise_response(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=(5, 25)), r"window: \(5, 25\) ends after the prediction \(20 rows x 1 s = 20 s\)"),
    (dict(window=(8, 4)), "window: expected 0 <= start_s < end_s"),
    (dict(window=(-1, 4)), "window: expected 0 <= start_s < end_s"),
    (dict(window="5-10"), "window: expected None or"),
    (dict(window=(5.2, 5.8)), "holds no row"),
    (dict(window=(5, 6), how="std"), "how='std' needs at least 2 rows"),
    (dict(how="median"), r"how: expected one of \('mean', 'std'\), got 'median'"),
    (dict(tr_s=0), "tr_s: expected seconds per row > 0"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        summarise_response(np.zeros((20, 3)), **kwargs)


def test_prediction_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"prediction: expected a \(T, V\) array"):
        summarise_response(np.zeros(5))


def test_every_response_summary_has_an_effect_label():
    # the effect maps' colour bar says what was contrasted: a label for each summary a design may choose
    from nforge_jax.insilico.response import SUMMARIES
    from nforge_jax.viz.contrast import EFFECT_LABELS

    assert set(EFFECT_LABELS) == set(SUMMARIES)
