"""Losses and metrics against direct numpy computations."""

import jax.numpy as jnp
import numpy as np

from nforge_jax.train import losses, metrics


def data(seed=0):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((3, 5, 7)).astype(np.float32)
    target = (pred * 0.5 + rng.standard_normal((3, 5, 7))).astype(np.float32)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    return pred, target, mask


def test_mse_ignores_masked_rows():
    pred, target, mask = data()
    expected = ((pred - target) ** 2)[mask].mean()
    np.testing.assert_allclose(losses.mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)), expected, rtol=1e-5)
    vw = np.arange(1, 8, dtype=np.float32)
    expected_w = (((pred - target) ** 2) * (vw / vw.mean()))[mask].mean()
    np.testing.assert_allclose(losses.weighted_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask),
                                                   jnp.asarray(vw)), expected_w, rtol=1e-5)


def test_pearson_loss_is_one_minus_mean_r():
    pred, target, mask = data(1)
    p, y = pred[mask], target[mask]
    r = [np.corrcoef(p[:, v], y[:, v])[0, 1] for v in range(7)]
    np.testing.assert_allclose(losses.pearson(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)),
                               1 - np.mean(r), rtol=1e-4)


def test_online_pearson_over_batches_equals_global_corrcoef():
    stats = metrics.init_pearson(2, 7)
    all_p, all_y, by_subject = [], [], {0: ([], []), 1: ([], [])}
    for seed in range(4):
        pred, target, mask = data(seed)
        ids = np.array([0, 1, seed % 2])
        stats = metrics.update_pearson(stats, jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask), jnp.asarray(ids))
        for b in range(3):
            all_p.append(pred[b][mask[b]])
            all_y.append(target[b][mask[b]])
            by_subject[ids[b]][0].append(pred[b][mask[b]])
            by_subject[ids[b]][1].append(target[b][mask[b]])
    p, y = np.concatenate(all_p), np.concatenate(all_y)
    expected = np.array([np.corrcoef(p[:, v], y[:, v])[0, 1] for v in range(7)])
    summary = metrics.summarize_pearson(stats)
    np.testing.assert_allclose(summary["r_vertex"], expected, rtol=1e-4, atol=1e-5)
    assert abs(summary["pearson"] - expected.mean()) < 1e-4
    for s in (0, 1):
        ps, ys = np.concatenate(by_subject[s][0]), np.concatenate(by_subject[s][1])
        exp_s = np.mean([np.corrcoef(ps[:, v], ys[:, v])[0, 1] for v in range(7)])
        assert abs(summary["subject_pearson"][s] - exp_s) < 1e-4


def test_retrieval_top1():
    target = np.eye(4, 6, dtype=np.float32)[:, None, :].repeat(3, 1)  # 4 samples, distinct patterns
    pred = target[[0, 1, 3, 2]]  # samples 2 and 3 swapped
    acc = metrics.retrieval_top1(jnp.asarray(pred), jnp.asarray(target), jnp.ones((4, 3), bool))
    assert float(acc) == 0.5
