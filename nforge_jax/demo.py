"""`nforge demo`: the whole path, offline, on synthetic data with a planted ground truth.

1. write a FeatureStore of synthetic stimuli and fMRI on the real fsaverage5 mesh (known noise ceiling);
2. train a small encoder (configs/demo.py) with validation on held-out stimuli, checkpoints, TensorBoard;
3. reload the best model with `NForgeModel.from_pretrained` and predict the held-out stimuli;
4. score every vertex (Pearson r, and r over the known noise ceiling);
5. attribute each vertex's prediction to text / audio / video (integrated gradients) and compare with the
   planted modality map;
6. render PNGs and write `summary.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

STORE_SPEC = dict(n_subjects=2, n_timelines=12, duration_s=400.0)


def _write_json_atomic(path: Path, doc: dict):
    from nforge_jax.data.store import atomic_open

    with atomic_open(path) as f:
        f.write((json.dumps(doc, indent=2) + "\n").encode())


def demo_config():
    """configs/demo.py's settings (kept in the package so `nforge demo` needs no checkout)."""
    from nforge_jax.train.config import default_config

    c = default_config()
    c.seed = 0
    c.data.batch_size = 8
    c.data.split_attributes = {"Synthetic": "stimulus"}  # hold out whole stimuli
    c.data.val_values = ("stim-11", "stim-12")  # two whole stimuli never seen in training
    c.data.weigh_by = "none"
    c.model.hidden = 96
    c.model.depth = 2
    c.model.heads = 3
    c.model.low_rank_head = 32
    c.model.modality_dropout = 0.0
    c.optim.lr = 1e-2
    c.train.epochs = 30
    c.train.log_every = 5
    c.train.eval_every_epochs = 10
    c.train.checkpoint_every_epochs = 10
    c.train.tb_images = False
    return c


def heldout_predictions(model, store, timelines, subjects_index):
    """Predictions and targets aligned as in training (:func:`nforge_jax.inference.evaluate.measured_targets`,
    which ``nforge evaluate`` uses too): the timeline's features from its ``start_s``, output row j (stimulus
    time ``start_s + j``) paired with the BOLD sample recorded the hemodynamic offset later (relative to the
    recording's ``fmri_start_s``); rows that have no sample are dropped."""
    from nforge_jax.data import timebase
    from nforge_jax.data.splits import subject_key
    from nforge_jax.inference.evaluate import measured_targets

    preds, targets = [], []
    for name in timelines:
        meta = store.meta(name)
        start_s = float(meta.get("start_s", 0.0))
        row0 = timebase.feature_row(start_s, meta["feature_hz"])
        features = {m: np.asarray(store.features(name, m)[row0:], np.float32) for m in store.modalities(name)}
        pred = model.predict_features(features, subject=subjects_index[subject_key(meta)])
        target, mask = measured_targets(store, name, len(pred))
        preds.append(pred[mask])
        targets.append(target[mask])
    return np.concatenate(preds), np.concatenate(targets)


def run_demo(out: Path, seed: int = 0, epochs: int | None = None, log=print) -> dict:
    from nforge_jax.data.splits import make_subjects_index
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.train.loop import split_for, train

    t0 = time.time()
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    store_dir, train_dir, fig_dir = out / "store", out / "train", out / "figures"

    log(f"[1/6] synthetic store: {STORE_SPEC['n_subjects']} subjects x {STORE_SPEC['n_timelines']} stimuli x "
        f"{STORE_SPEC['duration_s']:.0f} s on fsaverage5 -> {store_dir}")
    truth, store = _synthetic_store(store_dir, seed)

    cfg = demo_config()
    cfg.seed = seed
    cfg.data.store = str(store_dir)
    if epochs:
        cfg.train.epochs = epochs
    log(f"[2/6] training (resumes if {train_dir} holds a checkpoint); TensorBoard: tensorboard --logdir {train_dir / 'tb'} "
        f"(pip install \"nforge_jax[tensorboard]\")")
    summary_train = train(cfg, train_dir, log=log)

    log("[3/6] reloading the best model with NForgeModel.from_pretrained and predicting held-out stimuli")
    model = NForgeModel.from_pretrained(summary_train["best_model"])
    _, val_tl = split_for(cfg, store)
    pred, target = heldout_predictions(model, store, val_tl, make_subjects_index(store))

    log("[4/6] scoring every vertex against the known noise ceiling")
    scores = _score(pred, target, truth)

    log("[5/6] integrated-gradients attribution of every vertex to text / audio / video")
    dominant, planted, agreement = _attribution(model, store, val_tl[0], truth, scores["cortex"])

    log("[6/6] rendering figures")
    paths = _figures(fig_dir, pred, target, truth, scores, dominant, planted)
    cortex, median_r, median_ratio = scores["cortex"], scores["median_r"], scores["median_ratio"]
    summary = {
        "median_r": median_r,
        "median_r_over_ceiling": median_ratio,
        "median_noise_ceiling": float(np.median(truth.noise_ceiling[cortex])),
        "n_vertices": int(scores["r"].shape[0]),
        "n_cortical_vertices": int(cortex.sum()),
        "heldout_timelines": val_tl,
        "attribution_agreement": agreement,
        "train": {k: summary_train[k] for k in ("steps", "epochs", "best_val_pearson", "seconds")},
        "seconds": time.time() - t0,
        "paths": {"store": str(store_dir), "train": str(train_dir), "best_model": summary_train["best_model"],
                  "tensorboard": str(train_dir / "tb"), **{k: str(v) for k, v in paths.items()},
                  "summary": str(out / "summary.json")},
    }
    _write_json_atomic(out / "summary.json", summary)
    log(f"median r {median_r:.3f}, median r / noise ceiling {median_ratio:.3f} over {int(cortex.sum())} cortical "
        f"vertices; attribution matches the planted modality at {agreement:.0%} of strongly driven vertices")
    return summary


def _synthetic_store(store_dir: Path, seed: int):
    """(truth, FeatureStore) of the demo's synthetic data; a rerun reuses the store it already wrote."""
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.data.synthetic import TRUTH_FILE, SyntheticTruth, make_synthetic_store

    if (store_dir / TRUTH_FILE).is_file():
        truth = SyntheticTruth.load(store_dir / TRUTH_FILE)
    else:
        truth = make_synthetic_store(store_dir, seed=seed, **STORE_SPEC)
    return truth, FeatureStore.open(store_dir)


def _score(pred, target, truth) -> dict:
    """Per-vertex Pearson r, r over the known noise ceiling, and their medians over cortical vertices."""
    from nforge_jax.inference.adapt import pearson_per_vertex

    r = pearson_per_vertex(pred, target)
    cortex = truth.cortex_mask & (truth.noise_ceiling > 0)
    ratio = np.full_like(r, np.nan)
    ratio[cortex] = r[cortex] / truth.noise_ceiling[cortex]
    return {"r": r, "ratio": ratio, "cortex": cortex, "median_r": float(np.nanmedian(r[cortex])),
            "median_ratio": float(np.nanmedian(ratio[cortex]))}


def _attribution(model, store, name, truth, cortex):
    """(dominant modality per vertex by integrated gradients, planted dominant modality, their agreement on
    strongly driven vertices); |IG| is averaged over the whole windows of timeline ``name`` (per window: scores
    of the window's mean prediction)."""
    from nforge_jax.data.synthetic import MODALITIES
    from nforge_jax.inference.attribution import ModalityAttributor

    window = model.config.window_steps
    n_steps_total = store.features(name, store.modalities(name)[0]).shape[0]
    attributor = ModalityAttributor(model, method="gradient", n_steps=8)
    scores = np.zeros((len(MODALITIES), truth.noise_ceiling.shape[0]))
    starts = range(0, n_steps_total - window + 1, window)
    for start in starts:
        feats = {m: np.asarray(store.features(name, m)[start : start + window], np.float32)
                 for m in store.modalities(name)}
        attribution = attributor.attribute(feats)
        scores += np.stack([np.abs(attribution[m]) for m in MODALITIES]) / len(starts)
    dominant = scores.argmax(0)
    planted = truth.modality_weights.argmax(0)
    strong = cortex & (truth.modality_weights.max(0) > 0.6) & (truth.noise_ceiling > 0.6)
    agreement = float((dominant[strong] == planted[strong]).mean()) if strong.any() else float("nan")
    return dominant, planted, agreement


def _figures(fig_dir: Path, pred, target, truth, scores: dict, dominant, planted) -> dict:
    """Render the demo's PNGs; returns {name: path}."""
    from nforge_jax.viz.surface import plot_cortex, save_figure

    r, ratio, cortex = scores["r"], scores["ratio"], scores["cortex"]
    median_r, median_ratio = scores["median_r"], scores["median_ratio"]
    return {
        "r_map": save_figure(plot_cortex(np.where(cortex, r, np.nan), title=f"held-out Pearson r (median {median_r:.2f})", cmap="hot",
                                         vmin=0.0, vmax=1.0, colorbar_label="r"), fig_dir / "r_cortex.png"),
        "r_over_ceiling_map": save_figure(plot_cortex(np.clip(ratio, 0, 1.2), title=f"r / noise ceiling "
                                                      f"(median {median_ratio:.2f})", cmap="viridis", vmin=0.0,
                                                      vmax=1.2, colorbar_label="r / ceiling"),
                                          fig_dir / "r_over_ceiling_cortex.png"),
        "attribution_map": save_figure(_modality_figure(dominant, cortex, "dominant modality by integrated gradients"),
                                       fig_dir / "attribution.png"),
        "planted_map": save_figure(_modality_figure(planted, cortex, "planted (true) dominant modality"),
                                   fig_dir / "planted_modality.png"),
        "timecourses": save_figure(_timecourse_figure(pred, target, r, truth), fig_dir / "timecourses.png"),
    }


def _modality_figure(codes, cortex, title):
    """One colour per modality (text, audio, video) on cortical vertices."""
    from matplotlib.colors import ListedColormap

    from nforge_jax.viz.surface import plot_cortex

    cmap = ListedColormap(["tab:blue", "tab:orange", "tab:green"])
    values = np.where(cortex, codes + 1.0, np.nan)
    return plot_cortex(values, title=f"{title}: text (blue), audio (orange), video (green)", cmap=cmap, vmin=0.5,
                       vmax=3.5, symmetric=False, colorbar_label="1 text, 2 audio, 3 video")


def _timecourse_figure(pred, target, r, truth):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = ("text", "audio", "video")
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), sharex=True)
    n = min(len(pred), 200)
    for ax, m in zip(axes, range(3)):
        candidates = np.where((truth.modality_weights.argmax(0) == m) & np.isfinite(r))[0]
        v = candidates[np.nanargmax(r[candidates])] if candidates.size else int(np.nanargmax(r))
        ax.plot(target[:n, v], color="0.5", lw=1, label="measured (synthetic) fMRI")
        ax.plot(pred[:n, v], color="C3", lw=1.5, label="predicted")
        ax.set_ylabel("z")
        ax.set_title(f"vertex {v} ({names[m]}-driven), r = {r[v]:.2f}, ceiling {truth.noise_ceiling[v]:.2f}",
                     fontsize=9)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s, held-out stimuli)")
    fig.tight_layout()
    return fig
