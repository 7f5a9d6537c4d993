"""Contrast statistics against scipy's own tests and against brute-force enumeration of every relabelling."""

import itertools

import numpy as np
import pytest
import scipy.stats

from nforge_jax.insilico.stats import (DesignError, check_power, contrast_test, n_relabellings, roi_table_rows,
                                       smallest_p)


def _data(seed, sizes, n_out=7, shift=0.0):
    rng = np.random.default_rng(seed)
    out = {}
    for i, (name, n) in enumerate(sizes.items()):
        out[name] = rng.normal(size=(n, n_out)) + (shift if i == 0 else 0.0)
    return out


def _bh(p):
    """Benjamini-Hochberg written out: p_(i) * m / i, made monotone from the largest down."""
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def test_two_conditions_welch_t_and_ci_equal_scipy():
    v = _data(0, {"a": 5, "b": 7}, shift=0.8)
    r = contrast_test(v, {"a": 1, "b": -1}, n_permutations=200)
    ref = scipy.stats.ttest_ind(v["a"], v["b"], equal_var=False, axis=0)
    np.testing.assert_allclose(r.t, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(r.effect, v["a"].mean(0) - v["b"].mean(0), rtol=1e-12)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose(r.ci_low, ci.low, rtol=1e-10)
    np.testing.assert_allclose(r.ci_high, ci.high, rtol=1e-10)
    assert r.test == "label-permutation" and not r.exact and r.n_permutations == 200


def test_one_condition_is_a_sign_flip_one_sample_t():
    v = _data(1, {"faces": 6}, shift=0.5)
    r = contrast_test(v, {"faces": -2.0}, n_permutations=1000)
    ref = scipy.stats.ttest_1samp(v["faces"], 0.0, axis=0)
    np.testing.assert_allclose(r.t, -ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(r.effect, -2.0 * v["faces"].mean(0), rtol=1e-12)
    assert r.test == "sign-flip" and r.exact and r.n_permutations == 2**6


def _brute_force_two(v):
    """Every split of the pooled stimuli into groups of the original sizes, t by scipy."""
    pooled = np.concatenate([v["a"], v["b"]])
    n_a, n = len(v["a"]), len(pooled)
    ts = []
    for idx in itertools.combinations(range(n), n_a):
        mask = np.zeros(n, bool)
        mask[list(idx)] = True
        ts.append(scipy.stats.ttest_ind(pooled[mask], pooled[~mask], equal_var=False, axis=0).statistic)
    return np.array(ts)


def test_exact_label_permutation_p_and_fwe_equal_brute_force():
    v = _data(2, {"a": 4, "b": 5}, n_out=6, shift=1.2)
    r = contrast_test(v, {"a": 1, "b": -1}, n_permutations=10_000)
    null = _brute_force_two(v)
    assert r.exact and r.n_permutations == len(null) == 126
    t = null[0] * 0 + r.t
    # two-sided as scipy defines it: twice the smaller one-sided share of relabellings at least as extreme
    tol = 1e-12
    greater = (null >= t - tol).mean(axis=0)
    less = (null <= t + tol).mean(axis=0)
    np.testing.assert_allclose(r.p, np.minimum(1.0, 2 * np.minimum(greater, less)), rtol=1e-12)
    peak = np.abs(null).max(axis=1)
    fwe = np.array([(peak >= abs(tv) - tol).mean() for tv in r.t])
    np.testing.assert_allclose(r.p_fwe, np.maximum(fwe, r.p), rtol=1e-12)
    np.testing.assert_allclose(r.p_fdr, _bh(r.p), rtol=1e-12)
    assert np.all(r.p_fwe >= r.p - 1e-12)  # family-wise control is never less strict


def test_exact_sign_flip_equals_enumeration():
    v = _data(3, {"x": 6}, n_out=5, shift=0.7)
    r = contrast_test(v, {"x": 1}, n_permutations=10_000)
    null = []
    for signs in itertools.product([1.0, -1.0], repeat=6):
        null.append(scipy.stats.ttest_1samp(v["x"] * np.array(signs)[:, None], 0.0, axis=0).statistic)
    null = np.array(null)
    tol = 1e-12
    p = np.minimum(1.0, 2 * np.minimum((null >= r.t - tol).mean(0), (null <= r.t + tol).mean(0)))
    np.testing.assert_allclose(r.p, p, rtol=1e-12)
    peak = np.abs(null).max(axis=1)
    np.testing.assert_allclose(r.p_fwe, np.maximum([(peak >= abs(tv) - tol).mean() for tv in r.t], r.p), rtol=1e-12)


def test_three_condition_contrast_generalised_welch():
    v = _data(4, {"speech": 6, "music": 5, "noise": 4}, n_out=4, shift=1.0)
    w = {"speech": 1, "music": -0.5, "noise": -0.5}
    r = contrast_test(v, w, n_permutations=300)
    for j in range(4):
        effect = v["speech"][:, j].mean() - 0.5 * v["music"][:, j].mean() - 0.5 * v["noise"][:, j].mean()
        var = sum(w[c] ** 2 * np.var(v[c][:, j], ddof=1) / len(v[c]) for c in w)
        assert r.effect[j] == pytest.approx(effect, rel=1e-12)
        assert r.t[j] == pytest.approx(effect / np.sqrt(var), rel=1e-12)
    assert r.n_stimuli == {"speech": 6, "music": 5, "noise": 4}


def test_random_permutations_are_reproducible_and_bounded():
    v = _data(5, {"a": 8, "b": 8}, n_out=50)
    r1 = contrast_test(v, {"a": 1, "b": -1}, n_permutations=199, seed=7)
    r2 = contrast_test(v, {"a": 1, "b": -1}, n_permutations=199, seed=7)
    np.testing.assert_array_equal(r1.p, r2.p)
    assert r1.p.min() >= 2 / 200 - 1e-12 and np.all(r1.p_fwe >= r1.p)


def test_null_data_gives_nominal_rate():
    rng = np.random.default_rng(6)
    v = {"a": rng.normal(size=(8, 3000)), "b": rng.normal(size=(8, 3000))}
    r = contrast_test(v, {"a": 1, "b": -1}, n_permutations=499)
    rate = (r.p <= 0.05).mean()
    assert 0.03 < rate < 0.07  # 3000 outputs: binomial sd of the rate ~0.004
    assert (r.p_fwe <= 0.05).sum() <= 2 and (r.p_fdr <= 0.05).sum() <= 5


def test_planted_effect_is_found_where_it_was_planted():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(8, 400))
    b = rng.normal(size=(8, 400))
    a[:, :40] += 3.0
    r = contrast_test({"a": a, "b": b}, {"a": 1, "b": -1}, n_permutations=999)
    planted, rest = slice(0, 40), slice(40, None)
    assert (r.p_fdr[planted] <= 0.05).mean() > 0.8 and (r.p_fdr[rest] <= 0.05).mean() < 0.02
    assert (r.p_fwe[planted] <= 0.05).mean() > 0.5 and not (r.p_fwe[rest] <= 0.05).any()
    assert np.all(r.t[planted] > 0)


def test_constant_outputs_give_t_zero_not_nan():
    v = _data(9, {"a": 5, "b": 5}, n_out=3)
    v["a"][:, 1] = 2.0
    v["b"][:, 1] = 2.0
    r = contrast_test(v, {"a": 1, "b": -1}, n_permutations=300)
    assert r.t[1] == 0.0 and r.p[1] == 1.0 and np.isfinite(r.t).all()


@pytest.mark.parametrize("sizes, weights, ok", [
    ({"a": 3, "b": 3}, {"a": 1, "b": -1}, False),   # 20 splits: smallest p 0.1
    ({"a": 4, "b": 4}, {"a": 1, "b": -1}, True),    # 70 splits: 0.029
    ({"a": 5}, {"a": 1}, False),                    # 32 flips: 0.0625
    ({"a": 6}, {"a": 1}, True),                     # 64 flips: 0.031
    ({"a": 1, "b": 20}, {"a": 1, "b": -1}, False),  # one stimulus has no variance
])
def test_check_power(sizes, weights, ok):
    if ok:
        check_power(sizes, weights)
    else:
        with pytest.raises(DesignError, match="contrast 'c'"):
            check_power(sizes, weights, name="c")


def test_relabelling_counts_and_floor():
    assert n_relabellings({"a": 4, "b": 5}, {"a": 1, "b": -1}) == 126
    assert n_relabellings({"a": 2, "b": 2, "c": 2}, {"a": 1, "b": -0.5, "c": -0.5}) == 90
    assert n_relabellings({"a": 7}, {"a": 1}) == 128
    assert smallest_p({"a": 10, "b": 10}, {"a": 1, "b": -1}, 999) == pytest.approx(2 / 1000)


@pytest.mark.parametrize("weights, match", [
    ({"a": 1, "b": 1}, "sum to 2"),
    ({"a": 0, "b": 0}, "every weight is zero"),
    ({"a": 1, "z": -1}, "unknown condition"),
])
def test_bad_weights_are_refused(weights, match):
    v = _data(10, {"a": 6, "b": 6})
    with pytest.raises(DesignError, match=match):
        contrast_test(v, weights, name="c")


def test_bad_values_are_refused():
    v = _data(11, {"a": 6, "b": 6})
    v["b"] = v["b"][:, :3]
    with pytest.raises(DesignError, match="one n_outputs"):
        contrast_test(v, {"a": 1, "b": -1})
    v = _data(11, {"a": 6, "b": 6})
    v["a"][2, 1] = np.nan
    with pytest.raises(DesignError, match="NaN"):
        contrast_test(v, {"a": 1, "b": -1})


def test_roi_rows():
    v = _data(12, {"a": 6, "b": 6}, n_out=10, shift=2.0)
    w = {"a": 1, "b": -1}
    r = contrast_test(v, w, n_permutations=500)
    regions = [("all", "all", np.arange(10)), ("left", "area", np.arange(4)), ("none", "area", np.array([], int))]
    rows = roi_table_rows(v, w, r, regions)
    assert [row["region"] for row in rows] == ["all", "left", "none"]
    assert rows[1]["effect"] == pytest.approx(r.effect[:4].mean(), rel=1e-12)
    ref = scipy.stats.ttest_ind(v["a"][:, :4].mean(1), v["b"][:, :4].mean(1), equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (rows[1]["ci_low"], rows[1]["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert rows[0]["frac_fdr"] == pytest.approx((r.p_fdr <= 0.05).mean())
    assert rows[1]["frac_fwe"] == pytest.approx((r.p_fwe[:4] <= 0.05).mean())
    assert rows[2]["n_outputs"] == 0 and np.isnan(rows[2]["effect"])
