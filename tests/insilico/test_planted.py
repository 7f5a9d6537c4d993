"""Planted checks of in-silico contrasts on the synthetic world, whose modality territories are known.

The "model" here is the planted encoding itself without its per-run z-scoring: each output's response is the
stimulus's hemodynamic latents read out by the subject's planted weights (``SyntheticTruth.noiseless_bold``
z-scores every output, which would erase the response strength a contrast compares). Conditions drive one
modality (the other modalities' features are zero); each stimulus is summarised by its temporal standard
deviation, the response strength of zero-mean inputs.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats

from nforge_jax.data import synthetic as syn
from nforge_jax.insilico.response import summarise_response
from nforge_jax.insilico.stats import contrast_test

VIDEO, AUDIO = syn.MODALITIES.index("video"), syn.MODALITIES.index("audio")
CONTRAST = {"video": 1.0, "audio": -1.0}


@pytest.fixture(scope="module")
def cortex():
    truth, _ = syn.generate_synthetic(n_subjects=3, n_timelines=1, duration_s=60, seed=0)
    return truth


@pytest.fixture(scope="module")
def subcortical():
    from nforge_jax.data.subcortical import load_grid

    truth, _ = syn.generate_synthetic(space="subcortical", grid=load_grid(), n_subjects=1, n_timelines=1,
                                      duration_s=60, seed=0)
    return truth


def response(truth, features, subject, outputs=slice(None)):
    """(T, V) the planted read-out of the stimulus's latents (not z-scored)."""
    return truth.latents(features) @ truth.readouts[subject][:, outputs].astype(np.float64)


def only(features, modality):
    return {m: x if m == modality else np.zeros_like(x) for m, x in features.items()}


def condition(truth, modality, *, n, seed, subject=0, duration_s=60, outputs=slice(None)):
    """(n, V) std summaries of n stimuli that drive only ``modality``."""
    feats = [syn.make_features(duration_s, seed=seed, stimulus=i) for i in range(n)]
    return np.stack([summarise_response(response(truth, only(f, modality), subject, outputs), how="std")
                     for f in feats])


def auc(scores, positive):
    """Area under the ROC curve of ``scores`` for the ``positive`` labels (Mann-Whitney U / (n1 n0))."""
    ranks = scipy.stats.rankdata(scores)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def signal(truth):
    return truth.cortex_mask & (truth.noise_ceiling > 0)


def planted_auc(truth, t):
    """AUC of the t-map against the planted map: outputs whose video share exceeds their audio share vs the
    reverse, over the outputs that carry signal."""
    w = truth.modality_weights
    keep = signal(truth) & (w[VIDEO] != w[AUDIO])
    return auc(t[keep], (w[VIDEO] > w[AUDIO])[keep])


def test_auc_formula_matches_scipy_mann_whitney():
    rng = np.random.default_rng(0)
    scores, labels = rng.standard_normal(50), rng.random(50) < 0.4
    u = scipy.stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert auc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))
    assert auc(np.arange(6.0), np.arange(6) >= 3) == 1.0


@pytest.mark.parametrize("space", ["cortex", "subcortical"])
def test_video_minus_audio_recovers_the_planted_territories(space, request):
    truth = request.getfixturevalue(space)
    values = {"video": condition(truth, "video", n=8, seed=11), "audio": condition(truth, "audio", n=8, seed=12)}
    result = contrast_test(values, CONTRAST, name="video - audio", n_permutations=200)
    assert planted_auc(truth, result.t) >= 0.95
    # what the FDR map calls video-driven is planted video > audio, and the reverse
    w, hit = truth.modality_weights, (result.p_fdr <= 0.05) & signal(truth)
    assert hit.sum() > 0.2 * signal(truth).sum()
    agrees = np.sign(result.effect[hit]) == np.sign(w[VIDEO] - w[AUDIO])[hit]
    assert agrees.mean() >= 0.95


def test_two_halves_of_one_condition_give_nominal_false_positives(cortex):
    # 40 seeds, each new video-only stimuli split 6 / 6 at random (an exact test over the 924 relabellings),
    # scored at every 16th signal vertex. The vertices share a few latents, so their p-values are strongly
    # correlated within a seed; the seeds are independent, so the bounds come from the spread over seeds.
    outputs = np.flatnonzero(signal(cortex))[::16]
    rates, fdr, fwe = [], 0, 0
    for seed in range(40):
        x = condition(cortex, "video", n=12, seed=100 + seed, duration_s=30, outputs=outputs)
        half = np.random.default_rng(seed).permutation(12)
        r = contrast_test({"a": x[half[:6]], "b": x[half[6:]]}, {"a": 1, "b": -1}, seed=seed)
        assert r.exact and r.n_permutations == 924
        rates.append((r.p <= 0.05).mean())
        fdr += bool((r.p_fdr <= 0.05).any())
        fwe += bool((r.p_fwe <= 0.05).any())
    rates = np.array(rates)
    se = rates.std(ddof=1) / np.sqrt(len(rates))
    print(f"null: mean p<=0.05 rate {rates.mean():.4f} (se {se:.4f}) over {len(rates)} seeds; "
          f"seeds with an FDR hit {fdr}, with an FWE hit {fwe}")
    assert abs(rates.mean() - 0.05) <= 3 * se + 0.005
    # a family-wise error (any FDR or FWE hit under the complete null) in at most the 99 % binomial share
    most = scipy.stats.binom.ppf(0.99, len(rates), 0.05)
    assert fdr <= most and fwe <= most


def test_subject_maps_agree_with_the_group_map_where_subjects_share_the_plant(cortex):
    n_subjects = cortex.readouts.shape[0]
    per = [{"video": condition(cortex, "video", n=8, seed=21, subject=s),
            "audio": condition(cortex, "audio", n=8, seed=22, subject=s)} for s in range(n_subjects)]
    group = {c: np.mean([p[c] for p in per], axis=0) for c in CONTRAST}  # each stimulus's mean over heads
    t_group = contrast_test(group, CONTRAST, n_permutations=100).t
    w = cortex.modality_weights
    driven = signal(cortex) & ((w[VIDEO] > 0.6) | (w[AUDIO] > 0.6))
    assert driven.sum() > 1000
    assert planted_auc(cortex, t_group) >= 0.95
    for s, values in enumerate(per):
        t = contrast_test(values, CONTRAST, n_permutations=100).t
        assert np.corrcoef(t[driven], t_group[driven])[0, 1] > 0.8, s
        assert (np.sign(t[driven]) == np.sign(t_group[driven])).mean() > 0.95, s
        assert planted_auc(cortex, t) >= 0.95, s


class PlantedModel:
    """What the demo's contrast step reads from a trained model, answered by the planted encoding: one head per
    subject, and the average subject as the mean of the subjects' read-outs."""

    def __init__(self, truth):
        self.truth, self.config = truth, SimpleNamespace(n_subjects=truth.readouts.shape[0])

    def predict_features(self, features, subject=None):
        readout = self.truth.readouts.mean(axis=0) if subject is None else self.truth.readouts[subject]
        return self.truth.latents(features) @ readout.astype(np.float64)


@pytest.mark.parametrize("space", ["cortex", "subcortical"])
def test_the_demo_contrast_step_recovers_the_plant_from_a_faithful_model(space, request, tmp_path):
    from nforge_jax import demo

    truth = request.getfixturevalue(space)
    grid = None if space == "cortex" else demo._subcortical_grid()
    summary, result = demo._planted_contrast(PlantedModel(truth), truth, signal(truth), seed=0)
    assert summary["auc"] == pytest.approx(planted_auc(truth, result.t))
    assert summary["auc"] >= 0.95 and summary["n_heads"] == truth.readouts.shape[0]
    # subjects here share 90 % of their read-outs: the average head follows the plant too
    assert summary["auc_average_subject"] >= 0.95
    assert summary["n_significant_fdr"] == int(((result.p_fdr <= 0.05) & signal(truth)).sum()) > 0
    path = demo._contrast_map(tmp_path, result, signal(truth), grid)
    assert path.name == "contrast_video_vs_audio.png" and path.read_bytes()[:4] == b"\x89PNG"
