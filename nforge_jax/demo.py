"""`nforge demo`: the whole path, offline, on synthetic data with a planted ground truth.

1. write FeatureStores of synthetic stimuli and fMRI on the real fsaverage5 mesh (known noise ceiling): two
   training subjects, and a third, new subject kept apart for adaptation; the two test stimuli are shown
   three times to every subject (repeats give the noise ceiling);
2. train a small encoder (configs/demo.py): validation stimuli choose the checkpoint, the test stimuli are
   seen by neither training nor validation (``data.test_values``);
3. reload the best model with `NForgeModel.from_pretrained` and predict the test stimuli;
4. `evaluate` them: per-vertex r, the noise ceiling estimated from the repeats (compared with the analytic one),
   r / ceiling, per-ROI medians with bootstrap intervals;
5. split each vertex's explained variance among text / audio / video (variance shares of time-resolved
   integrated gradients) and compare the dominant modality with the planted one;
6. adapt to the new subject from 10 % of a training subject's data (ridge on the frozen latent) and compare
   with the nearest training head and with no calibration (the average subject), on the unseen test stimuli;
7. a planted in-silico contrast: ``video - audio`` over video-only and audio-only stimuli (new features, the
   other modalities zero), each stimulus summarised by its response strength (temporal std) averaged over the
   subject heads, tested per output with `insilico.stats.contrast_test` and scored against the planted modality
   map (ROC AUC; the average-subject head's map too);
8. render PNGs and write ``summary.json``.

``space="subcortical"`` runs the same path on TRIBE v2's subcortical grid (`data.subcortical`; structures
instead of HCP-MMP1 areas, MNI slices instead of cortex maps).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

# Subjects differ (half of each subject's read-out is its own), so a new subject needs calibration.
STORE_SPEC = dict(n_subjects=3, n_timelines=14, duration_s=400.0, subject_variability=0.5, repeats={12: 3, 13: 3})
NEW_SUBJECT = "sub-03"  # kept out of training: the subject the demo adapts to
VAL_STIMULI = ("stim-11", "stim-12")  # choose the checkpoint
TEST_STIMULI = ("stim-13", "stim-14")  # scored once at the end; shown 3 times to every subject
CALIBRATION_STIMULI = ("stim-01",)  # 400 s of the new subject = 10 % of a training subject's 4,000 s
# The planted contrast's stimuli: new features (their own seed stream), per condition and seconds each.
CONTRAST_STIMULI, CONTRAST_DURATION_S, CONTRAST_SEED_OFFSET = 8, 60.0, 1000


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
    c.data.val_values = VAL_STIMULI  # two whole stimuli never seen in training choose the checkpoint
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


def timeline_predictions(model, store, timelines, subject) -> dict[str, np.ndarray]:
    """{timeline: (rows, V) predictions} from each timeline's features (read from its ``start_s``), as
    ``nforge predict`` writes them. subject: an index / name for every timeline, or a callable meta -> subject."""
    out = {}
    for name in timelines:
        meta = store.meta(name)
        out[name] = model.predict_features(_features(store, name), subject=subject(meta) if callable(subject) else subject)
    return out


def run_demo(out: Path, seed: int = 0, epochs: int | None = None, log=print, space: str = "fsaverage5",
             duration_s: float | None = None) -> dict:
    """The demo into ``out``; ``duration_s`` shortens every synthetic stimulus (default 400 s) for a quicker look."""
    from nforge_jax.data.splits import make_subjects_index, subject_key
    from nforge_jax.inference.attribution import store_variance_shares
    from nforge_jax.inference.evaluate import evaluate
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.train.loop import held_out_test_timelines, split_for
    from nforge_jax.viz.evaluation import save_evaluation_figures

    spec = _demo_spec(space, duration_s)
    t0 = time.time()
    grid = _subcortical_grid() if space == "subcortical" else None
    where = "fsaverage5" if grid is None else f"the subcortical grid ({grid.n_voxels:,} voxels)"
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    store_dir, new_dir, train_dir, fig_dir = out / "store", out / "new_subject_store", out / "train", out / "figures"

    log(f"[1/8] synthetic stores on {where}: 2 training subjects + 1 new subject, {spec['n_timelines']} "
        f"stimuli x {spec['duration_s']:.0f} s, test stimuli shown 3 times -> {store_dir}, {new_dir}")
    truth, store, new_store = _synthetic_stores(store_dir, new_dir, seed, spec, grid)

    cfg, summary_train = _train_stage(store_dir, train_dir, seed, epochs, log)

    log("[3/8] reloading the best model with NForgeModel.from_pretrained and predicting the unseen test stimuli")
    model = NForgeModel.from_pretrained(summary_train["best_model"])
    _, val_tl = split_for(cfg, store)
    test_tl = held_out_test_timelines(cfg, store)
    subjects = make_subjects_index(store)
    preds = timeline_predictions(model, store, test_tl, lambda meta: subjects[subject_key(meta)])

    log("[4/8] evaluate: r, noise ceiling from the repeats, r / ceiling, per-ROI medians with bootstrap intervals")
    result = evaluate(preds, store, timelines=test_tl, ceiling="auto", grid=grid)
    eval_paths = result.save(out / "evaluation")
    cortex = truth.cortex_mask & (truth.noise_ceiling > 0)  # outputs that carry signal (cortex / grey matter)
    log(result.summary_text())

    log("[5/8] variance shares: each vertex's explained variance split among text / audio / video")
    shares = store_variance_shares(model, store, test_tl, subject=subjects)
    dominant, planted, agreement = _dominant_modality(shares, truth, cortex)

    log(f"[6/8] adapting to the new subject {NEW_SUBJECT} from {len(CALIBRATION_STIMULI) * spec['duration_s']:.0f} s "
        "(10 % of a training subject's data); scored on the unseen test stimuli")
    adaptation = _adaptation(model, new_store, spec, grid)

    log(f"[7/8] planted contrast video - audio: {CONTRAST_STIMULI} video-only and {CONTRAST_STIMULI} audio-only "
        f"new stimuli x {CONTRAST_DURATION_S:.0f} s, response strength (temporal std), group map over the subject heads")
    contrast, contrast_result = _planted_contrast(model, truth, cortex, seed)

    log("[8/8] rendering figures")
    figures = {**save_evaluation_figures(result, fig_dir, grid=grid),
               **_figures(fig_dir, preds, store, result, truth, dominant, planted, cortex, adaptation, grid),
               "contrast_map": _contrast_map(fig_dir, contrast_result, cortex, grid)}
    paths = {"store": str(store_dir), "new_subject_store": str(new_dir), "train": str(train_dir),
             "best_model": summary_train["best_model"], "tensorboard": str(train_dir / "tb"),
             **{f"evaluation_{k}": str(v) for k, v in eval_paths.items()},
             **{k: str(v) for k, v in figures.items()}, "summary": str(out / "summary.json")}
    summary = _summary(result, truth, cortex, spec, space, val_tl, test_tl, agreement, adaptation, summary_train,
                       time.time() - t0, paths)
    summary["contrast"] = contrast
    _write_json_atomic(out / "summary.json", summary)
    _log_scores(log, summary, result, grid)
    return summary


def _demo_spec(space: str, duration_s: float | None) -> dict:
    """STORE_SPEC with the chosen stimulus duration, after checking the arguments."""
    if space not in ("fsaverage5", "subcortical"):
        raise ValueError(f"space: expected 'fsaverage5' or 'subcortical', got {space!r}")
    spec = dict(STORE_SPEC, duration_s=float(duration_s or STORE_SPEC["duration_s"]))
    if not 60 <= spec["duration_s"] <= 3600:
        raise ValueError(f"duration_s: expected seconds per stimulus in [60, 3600], got {duration_s!r}")
    return spec


def _train_stage(store_dir: Path, train_dir: Path, seed: int, epochs: int | None, log):
    """(config, train summary): configs/demo.py's encoder trained on the store (resumed from ``train_dir``)."""
    from nforge_jax.train.loop import train

    cfg = demo_config()
    cfg.seed = seed
    cfg.data.store = str(store_dir)
    cfg.data.test_values = TEST_STIMULI  # seen by neither training nor validation
    if epochs:
        cfg.train.epochs = epochs
    log(f"[2/8] training (resumes if {train_dir} holds a checkpoint); TensorBoard: tensorboard --logdir {train_dir / 'tb'} "
        f"(pip install \"nforge_jax[tensorboard]\")")
    return cfg, train(cfg, train_dir, log=log)


def _summary(result, truth, cortex, spec, space, val_tl, test_tl, agreement, adaptation, summary_train,
             seconds: float, paths: dict) -> dict:
    """summary.json's content: scores over the outputs that carry signal, the split, the adaptation, the paths."""
    cortex_row = _cortex_row(result.rois)
    analytic = truth.repeat_mean_ceiling(spec["repeats"][12])
    return {
        "median_r": cortex_row["median_r"],
        "median_r_over_ceiling": cortex_row["median_r_over_ceiling"],
        "median_r_over_ceiling_ci": [cortex_row["median_r_over_ceiling_ci_low"],
                                     cortex_row["median_r_over_ceiling_ci_high"]],
        "ceiling_method": result.ceiling_method,
        "median_noise_ceiling": float(np.nanmedian(result.ceiling[cortex])),
        "median_noise_ceiling_analytic": float(np.median(analytic[cortex])),
        "space": space,
        "n_outputs": int(result.r.shape[0]),
        "n_scored_outputs": int(cortex.sum()),
        "scored_outputs": cortex_row["roi"],
        "validation_timelines": val_tl,
        "test_timelines": test_tl,
        "attribution_agreement": agreement,
        "attribution_method": "variance shares of time-resolved integrated gradients (split R^2), test stimuli",
        "adaptation": adaptation,
        "train": {k: summary_train[k] for k in ("steps", "epochs", "best_val_pearson", "seconds")},
        "seconds": seconds,
        "paths": paths,
    }


def _cortex_row(rois: list[dict]) -> dict:
    """The evaluation row over every output that carries signal: the cortex, or the grey matter of the grid."""
    return next(row for row in rois if row["kind"] in ("cortex", "grey"))


def _log_scores(log, summary: dict, result, grid) -> None:
    a, n = summary["adaptation"], _cortex_row(result.rois)["n_vertices"]
    log(f"test stimuli: median r {summary['median_r']:.3f}, median r / noise ceiling {summary['median_r_over_ceiling']:.3f} "
        f"over {n} {'cortical vertices' if grid is None else 'grey-matter voxels'} (ceiling from repeats {summary['median_noise_ceiling']:.3f}, "
        f"analytic {summary['median_noise_ceiling_analytic']:.3f}); variance shares match the planted modality at "
        f"{summary['attribution_agreement']:.0%} of strongly driven {'vertices' if grid is None else 'voxels'}; new subject r / ceiling: ridge {a['ridge']['median_r_over_ceiling']:.2f}, "
        f"nearest head {a['nearest']['median_r_over_ceiling']:.2f}, no calibration {a['none']['median_r_over_ceiling']:.2f}")
    c = summary["contrast"]
    log(f"contrast video - audio (group of {c['n_heads']} subject heads): AUC {c['auc']:.3f} against the planted map "
        f"(average-subject head {c['auc_average_subject']:.3f}), {c['n_significant_fdr']} FDR-significant (q 0.05) and "
        f"{c['n_significant_fwe']} FWE-significant of {c['n_scored_outputs']} "
        f"{'cortical vertices' if grid is None else 'grey-matter voxels'} ({c['n_stimuli']} + {c['n_stimuli']} "
        f"stimuli x {c['duration_s']:.0f} s, {c['seconds']:.1f} s)")


def _subcortical_grid():
    from nforge_jax.data.subcortical import load_grid

    return load_grid()


def _synthetic_stores(store_dir: Path, new_dir: Path, seed: int, spec: dict, grid=None):
    """(truth, training FeatureStore, new-subject FeatureStore); a rerun reuses the stores it already wrote (the
    truth file is written last)."""
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.data.synthetic import TRUTH_FILE, SyntheticTruth, generate_synthetic

    if not (store_dir / TRUTH_FILE).is_file():
        for partial in (store_dir, new_dir):  # what a killed earlier run left: the demo's own output
            shutil.rmtree(partial, ignore_errors=True)
        space = {} if grid is None else {"space": "subcortical", "grid": grid}
        truth, runs = generate_synthetic(seed=seed, **spec, **space)
        stores = {True: FeatureStore.create(store_dir), False: FeatureStore.create(new_dir)}
        for run in runs:
            new = run.subject == NEW_SUBJECT
            if new and run.meta["stimulus"] not in CALIBRATION_STIMULI + TEST_STIMULI:
                continue
            stores[not new].write_timeline(run.name, features=run.features, fmri=run.fmri, meta=run.meta)
        truth.save(store_dir / TRUTH_FILE)
    truth = SyntheticTruth.load(store_dir / TRUTH_FILE)
    made = {k: truth.config.get(k) for k in ("seed", "duration_s")}
    wanted = {"seed": int(seed), "duration_s": spec["duration_s"]}
    made_space = truth.space.name
    if made != wanted or made_space != ("fsaverage5" if grid is None else "subcortical"):
        raise ValueError(f"{store_dir}: made by an earlier demo with {made} on {made_space}, not {wanted}; use another "
                         "--out (or delete it)")
    return truth, FeatureStore.open(store_dir), FeatureStore.open(new_dir)


def _dominant_modality(shares: dict, truth, cortex):
    """(dominant modality per vertex by variance share, planted dominant modality, their agreement on strongly
    driven vertices: planted weight > 0.6 and single-run ceiling > 0.6)."""
    from nforge_jax.data.synthetic import MODALITIES

    dominant = np.nan_to_num(np.stack([shares[m] for m in MODALITIES]), nan=-np.inf).argmax(0)
    planted = truth.modality_weights.argmax(0)
    strong = cortex & (truth.modality_weights.max(0) > 0.6) & (truth.noise_ceiling > 0.6)
    agreement = float((dominant[strong] == planted[strong]).mean()) if strong.any() else float("nan")
    return dominant, planted, agreement


def _adaptation(model, new_store, spec, grid=None) -> dict:
    """The new subject's test scores (median r and r / ceiling over cortex, ceiling from its repeats) with three
    heads: ridge on the frozen latent from the calibration stimulus, the nearest training head, no calibration."""
    from nforge_jax.inference.adapt import SubjectAdapter
    from nforge_jax.inference.evaluate import evaluate, measured_targets

    names = {stim: [n for n in new_store.timelines if new_store.meta(n)["stimulus"] == stim]
             for stim in CALIBRATION_STIMULI + TEST_STIMULI}
    calibration = []
    for stim in CALIBRATION_STIMULI:
        for name, pred in timeline_predictions(model, new_store, names[stim], None).items():
            fmri, mask = measured_targets(new_store, name, len(pred))
            calibration.append({"features": _features(new_store, name), "fmri": fmri, "mask": mask})
    test_tl = [n for stim in TEST_STIMULI for n in names[stim]]
    heads = {"ridge": SubjectAdapter.from_ridge(model, calibration, regularization="cv"),
             "nearest": SubjectAdapter.from_nearest_neighbor(model, calibration)}
    out = {}
    for label in ("ridge", "nearest", "none"):
        if label == "none":
            preds = timeline_predictions(model, new_store, test_tl, None)
        else:
            preds = {n: heads[label].predict_features(model, _features(new_store, n)) for n in test_tl}
        rows = evaluate(preds, new_store, timelines=test_tl, ceiling="auto", n_boot=0, grid=grid).rois
        row = _cortex_row(rows)
        out[label] = {"median_r": row["median_r"], "median_r_over_ceiling": row["median_r_over_ceiling"]}
    out["calibration_s"] = float(len(CALIBRATION_STIMULI) * spec["duration_s"])
    out["nearest_row"] = int(heads["nearest"].source_row)
    out["nearest_is_average"] = out["nearest_row"] == model.config.n_subjects  # the shared average row
    return out


def _features(store, name) -> dict:
    from nforge_jax.data import timebase

    meta = store.meta(name)
    row0 = timebase.feature_row(float(meta.get("start_s", 0.0)), meta["feature_hz"])
    return {m: np.asarray(store.features(name, m)[row0:], np.float32) for m in store.modalities(name)}


def _figures(fig_dir: Path, preds, store, result, truth, dominant, planted, cortex, adaptation, grid=None) -> dict:
    """The demo's own PNGs (the evaluation maps come from `viz.evaluation`); returns {name: path}."""
    from nforge_jax.viz.surface import save_figure

    return {
        "attribution_map": save_figure(_modality_figure(dominant, cortex, "dominant modality by variance share", grid),
                                       fig_dir / "attribution.png"),
        "planted_map": save_figure(_modality_figure(planted, cortex, "planted (true) dominant modality", grid),
                                   fig_dir / "planted_modality.png"),
        "timecourses": save_figure(_timecourse_figure(preds, store, result, truth), fig_dir / "timecourses.png"),
        "adaptation": save_figure(_adaptation_figure(adaptation), fig_dir / "adaptation.png"),
    }


def _modality_figure(codes, cortex, title, grid=None):
    """One colour per modality (text, audio, video) on the outputs that carry signal: the cortex, or MNI slices
    of the subcortical grid."""
    from matplotlib.colors import ListedColormap

    from nforge_jax.viz.surface import plot_cortex
    from nforge_jax.viz.volume import plot_subcortical

    cmap = ListedColormap(["tab:blue", "tab:orange", "tab:green"])
    values = np.where(cortex, codes + 1.0, np.nan)
    style = dict(title=f"{title}: text (blue), audio (orange), video (green)", cmap=cmap, vmin=0.5, vmax=3.5,
                 symmetric=False, colorbar_label="1 text, 2 audio, 3 video")
    return plot_cortex(values, **style) if grid is None else plot_subcortical(values, grid, **style)


def _timecourse_figure(preds, store, result, truth):
    """Prediction vs the mean of the repeats of the first test stimulus (first subject) at the best-predicted
    vertex of each planted modality."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nforge_jax.inference.evaluate import measured_targets

    first = store.meta(result.timelines[0])
    group = [n for n in result.timelines if store.meta(n)["stimulus"] == first["stimulus"]
             and store.meta(n)["subject"] == first["subject"]]
    pred = preds[group[0]]
    aligned = [measured_targets(store, n, len(pred)) for n in group]
    keep = aligned[0][1]
    target = np.mean([t for t, _ in aligned], axis=0)[keep]
    pred = pred[keep]
    r = result.r
    names = ("text", "audio", "video")
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), sharex=True)
    n = min(len(pred), 200)
    for ax, m in zip(axes, range(3)):
        candidates = np.where((truth.modality_weights.argmax(0) == m) & np.isfinite(r))[0]
        v = candidates[np.nanargmax(r[candidates])] if candidates.size else int(np.nanargmax(r))
        ax.plot(target[:n, v], color="0.5", lw=1, label=f"measured (synthetic) fMRI, mean of {len(group)} repeats")
        ax.plot(pred[:n, v], color="C3", lw=1.5, label="predicted")
        ax.set_ylabel("z")
        ax.set_title(f"vertex {v} ({names[m]}-driven), r = {r[v]:.2f}, ceiling {result.ceiling[v]:.2f}", fontsize=9)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel(f"time (s, test stimulus {first['stimulus']}, {first['subject']})")
    fig.tight_layout()
    return fig


def _adaptation_figure(adaptation):
    """Median r / ceiling of the new subject on the test stimuli, per head."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nearest = "nearest head\n(the average row)" if adaptation["nearest_is_average"] else "nearest\ntraining head"
    labels = {"none": "no calibration\n(average subject)", "nearest": nearest,
              "ridge": f"ridge head\n({adaptation['calibration_s']:.0f} s calibration)"}
    values = [adaptation[k]["median_r_over_ceiling"] for k in labels]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar(list(labels.values()), values, color=["0.6", "tab:orange", "tab:green"])
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("median r / noise ceiling")
    ax.set_title("a new subject, unseen test stimuli", fontsize=10)
    fig.tight_layout()
    return fig


def _only(features: dict, modality: str) -> dict:
    return {m: x if m == modality else np.zeros_like(x) for m, x in features.items()}


def planted_auc(t, truth, outputs) -> float:
    """ROC AUC of a ``video - audio`` t-map against the planted map over ``outputs`` (a mask): outputs whose
    planted video share exceeds their audio share are the positives, the reverse the negatives (Mann-Whitney U
    from ranks, ties counted half)."""
    import scipy.stats

    from nforge_jax.data.synthetic import MODALITIES

    w = truth.modality_weights
    video, audio = w[MODALITIES.index("video")], w[MODALITIES.index("audio")]
    keep = outputs & (video != audio) & np.isfinite(t)
    positive = (video > audio)[keep]
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return float("nan")
    ranks = scipy.stats.rankdata(t[keep])
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _planted_contrast(model, truth, cortex, seed: int):
    """(summary dict, group ContrastResult) of ``video - audio`` on new video-only and audio-only stimuli, each
    summarised by its predicted temporal std (the features are zero-mean: the mean response is near zero in both
    conditions, the strength is what differs). The group map tests each stimulus's response averaged over the
    training subjects' heads; the average-subject head's map is scored too. Half of each planted read-out is the
    subject's own, so the average head's strength mixes read-outs that partly cancel and follows the planted
    shares less closely (the planted encoding's own average read-out scores AUC 0.90 on this world)."""
    from nforge_jax.data.synthetic import make_features
    from nforge_jax.insilico.response import summarise_response
    from nforge_jax.insilico.stats import contrast_test

    t0 = time.time()
    weights = {"video": 1.0, "audio": -1.0}
    heads = [*range(model.config.n_subjects), None]
    values = {h: {m: [] for m in weights} for h in heads}
    for k, modality in enumerate(weights):
        for i in range(CONTRAST_STIMULI):
            feats = _only(make_features(CONTRAST_DURATION_S, seed=seed + CONTRAST_SEED_OFFSET,
                                        stimulus=k * CONTRAST_STIMULI + i), modality)
            for h in heads:
                values[h][modality].append(summarise_response(model.predict_features(feats, subject=h), how="std"))
    group = {m: np.mean([values[h][m] for h in heads[:-1]], axis=0) for m in weights}
    result = contrast_test(group, weights, name="video - audio", seed=seed)
    # only its t-map is scored: the fewest permutations the test accepts
    average = contrast_test({m: np.stack(values[None][m]) for m in weights}, weights, n_permutations=100)
    return {"name": result.name, "auc": planted_auc(result.t, truth, cortex),
            "auc_average_subject": planted_auc(average.t, truth, cortex), "test": result.test,
            "n_permutations": result.n_permutations, "n_stimuli": CONTRAST_STIMULI,
            "duration_s": CONTRAST_DURATION_S, "summary": "temporal std", "n_heads": len(heads) - 1,
            "subject": f"group: each stimulus's response averaged over the {len(heads) - 1} training heads",
            "n_scored_outputs": int(cortex.sum()), "n_significant_fdr": int((result.p_fdr[cortex] <= 0.05).sum()),
            "n_significant_fwe": int((result.p_fwe[cortex] <= 0.05).sum()),
            "seconds": time.time() - t0}, result


def _contrast_map(fig_dir: Path, result, cortex, grid=None) -> Path:
    """figures/contrast_video_vs_audio.png: the t-map where FDR q <= 0.05 (outputs that carry signal)."""
    from nforge_jax.viz.surface import plot_cortex, save_figure
    from nforge_jax.viz.volume import plot_subcortical

    shown = np.where(cortex & (result.p_fdr <= 0.05), result.t, np.nan)
    style = dict(title="video - audio (planted contrast): Welch t where FDR q <= 0.05", cmap="cold_hot",
                 symmetric=True, colorbar_label="t (video > audio positive)")
    fig = plot_cortex(shown, **style) if grid is None else plot_subcortical(shown, grid, **style)
    return save_figure(fig, fig_dir / "contrast_video_vs_audio.png")
