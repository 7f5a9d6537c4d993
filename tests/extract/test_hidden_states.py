"""Layer choice (cache_n_layers subselection, fractions, aggregations) against hand-computed values."""

import numpy as np
import pytest

from nforge_jax.extract.hidden_states import layer_indices, select_layers


def test_layer_indices_cat_and_group_mean():
    # Llama-3.2-3B: 29 hidden states; int(f * 28)
    assert layer_indices(29, (0, 0.2, 0.4, 0.6, 0.8, 1.0), "cat") == [0, 5, 11, 16, 22, 28]
    # TRIBE v2 release groups (TRIBEV2_SPEC D.2): text [14:21], [21:29]; audio (25 states) [12:18], [18:25]
    assert layer_indices(29, (0.5, 0.75, 1.0), "group_mean") == [list(range(14, 21)), list(range(21, 29))]
    assert layer_indices(25, (0.5, 0.75, 1.0), "group_mean") == [list(range(12, 18)), list(range(18, 25))]
    assert layer_indices(41, (0.75, 1.0), "cat") == [30, 40]


def test_select_layers_values():
    states = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)  # state i = [2i, 2i + 1]
    np.testing.assert_array_equal(select_layers(states, (0.5, 1.0)), [[4, 5], [8, 9]])
    # (0.5, 0.75, 1.0) of 5 states -> indices 2, 3, 4 -> groups [2:3], [3:5]
    np.testing.assert_array_equal(select_layers(states, (0.5, 0.75, 1.0), "group_mean"), [[4, 5], [7, 8]])


def test_cache_n_layers_subselection_of_the_release():
    # TRIBEV2_SPEC D.2: with cache_n_layers = 20, Llama-3.2-3B's 29 states are first cut to
    # round(linspace(0, 28, 20)); the release groups are then {13, 15, 16, 18, 19} and {21, ..., 28}
    assert layer_indices(29, (0.5, 0.75, 1.0), "group_mean", 20) == [[13, 15, 16, 18, 19], [21, 22, 24, 25, 27, 28]]
    assert layer_indices(29, (0.5, 0.75, 1.0), "group_mean", 29) == layer_indices(29, (0.5, 0.75, 1.0), "group_mean")
    assert layer_indices(29, (1.0,), "cat", 20) == [28] and layer_indices(29, (0.5, 1.0), "mean") == [[14, 28]]
    states = np.arange(29, dtype=np.float32)[:, None]
    np.testing.assert_allclose(select_layers(states, (0.5, 0.75, 1.0), "group_mean", 20)[:, 0], [16.2, 24.5])
    np.testing.assert_allclose(select_layers(states, (0.5, 1.0), "sum")[:, 0], [42.0])
    with pytest.raises(ValueError, match="cache_n_layers"):
        layer_indices(29, (0.5, 1.0), "cat", 1)


@pytest.mark.parametrize("bad,agg", [((1.5,), "cat"), ((), "cat"), ((1.0, 0.5), "group_mean"), ((0.5,), "max")])
def test_bad_layer_settings(bad, agg):
    with pytest.raises(ValueError, match="layer"):
        layer_indices(29, bad, agg)
