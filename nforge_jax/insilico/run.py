"""Running an in-silico experiment: predict every stimulus, summarise it over the window, test the contrasts.

``run_experiment(design_or_path, model, out)`` writes under ``out``:

- ``stimuli/<key>.npz``: each stimulus's predicted time course for one head (``preds`` (n_rows, n_outputs),
  ``times``: stimulus seconds of each row), keyed by the stimulus's identity (path, size, mtime), the model
  fingerprint and the subject; written atomically, so a rerun (or one after a kill) predicts only what is missing;
- ``features/``: a FeatureStore of the media and events stimuli's features (the checkpoint's recipe; extractors
  loaded once per run), one timeline per file identity;
- ``<contrast>/roi.csv``: per map (the head, or every head and the group) and region (every output, HCP-MMP1
  areas and the 22 sections on the cortex, structures on the subcortical grid): mean effect, its 95% CI over
  stimuli, fraction of outputs significant after FDR and after FWE control;
- ``<contrast>/maps.npz``: effect, CI, t, p, p_fdr, p_fwe per map; and unless ``figures=False`` the effect and
  FDR-thresholded t PNGs and two viewer pages (`viz.contrast`);
- ``contrast.json`` (last): the design, what made the predictions (`inference.provenance.made_by` per head),
  every stimulus's identity and cache key, and per contrast and map the test's summary and its top regions.

With ``subject: all`` each training subject's head gives a subject-level map and the group map tests, per
stimulus, the mean of the heads' responses.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np

from nforge_jax.data.store import atomic_open
from nforge_jax.insilico import stats
from nforge_jax.insilico.response import summarise_response
from nforge_jax.insilico.design import Design, DesignError, check_against_model, heads, plan_experiment

__all__ = ["run_experiment", "summary_lines", "GROUP", "ROI_COLUMNS"]

GROUP = "group"
ROI_COLUMNS = ("map", "region", "kind", "n_outputs", "effect", "ci_low", "ci_high", "frac_fdr", "frac_fwe")
CACHE_VERSION = 1


def _bar(iterable, desc: str, progress: bool, unit: str, total=None):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, default=_plain) + "\n").encode()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(data)
    return path


def cache_key(identity: dict, fingerprint: str, subject: str) -> str:
    """The name of a stimulus's cached prediction: what it depends on, hashed."""
    doc = {"version": CACHE_VERSION, "stimulus": identity, "model_sha256": fingerprint, "subject": subject}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def _events(model, stimulus, name: str):
    """The events table of a media file or an events file, its timeline renamed ``name``."""
    from nforge_jax.insilico.design import read_events_file

    if stimulus.kind == "events":
        events = read_events_file(stimulus.path)
    else:
        from nforge_jax.inference.stimulus import AUDIO_SUFFIXES, VIDEO_SUFFIXES

        suffix = stimulus.path.suffix.lower()
        key = "video_path" if suffix in VIDEO_SUFFIXES else "audio_path" if suffix in AUDIO_SUFFIXES else "text_path"
        events = model.get_events_dataframe(**{key: stimulus.path})
    return events.assign(timeline=name)


class _Inputs:
    """A stimulus's model inputs, made once for all heads: the feature arrays of a feature file; or for media
    and events the events and their features, extracted with the checkpoint's recipe into ``out/features``
    (a FeatureStore: an interrupted extraction resumes)."""

    def __init__(self, model, stimulus, out: Path, name: str, shared: dict):
        self.model, self.stimulus, self.out, self.name, self.shared = model, stimulus, out, name, shared
        self._made = None

    def _extractors(self):
        """(recipe, extractors) of the checkpoint's modalities, loaded once for every stimulus of the run."""
        if "extractors" not in self.shared:
            import dataclasses

            from nforge_jax.extract.run import build_extractors  # torch: only for media and events stimuli
            from nforge_jax.inference.segments import default_extract_config

            config = self.model.extract_config or default_extract_config(self.model.config)
            config = dataclasses.replace(config, modalities=tuple(
                m for m in config.modalities if m in self.model.config.modalities), progress=False)
            self.shared["extractors"] = (config, build_extractors(config))
        return self.shared["extractors"]

    def predict(self, subject_id) -> tuple[np.ndarray, np.ndarray]:
        """(preds (n_rows, n_outputs), times (n_rows,) s from onset) for one head."""
        from nforge_jax.insilico.design import read_feature_stimulus

        if self.stimulus.kind == "features":
            self._made = self._made or read_feature_stimulus(self.stimulus.path)[0]
            preds = self.model.predict_features(self._made, subject=subject_id)
            return np.asarray(preds, np.float32), np.arange(len(preds), dtype=np.float64)
        if self._made is None:
            from nforge_jax.inference.segments import timeline_features

            events = _events(self.model, self.stimulus, self.name)
            config, extractors = self._extractors()
            feats = timeline_features(events, extract_config=config, store=self.out / "features",
                                      extractors=extractors)
            self._made = (events, feats)
        events, feats = self._made
        preds, segments = self.model.predict(events, subject=subject_id, features=feats)
        onset = float(events[events["type"] != "Fmri"]["start"].min())
        return np.asarray(preds, np.float32), np.array([seg.start - onset for seg in segments], np.float64)


def _cached(path: Path, key: str):
    """(preds, times) of a finished cache file whose key matches, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return np.asarray(z["preds"]), np.asarray(z["times"])
    except (OSError, ValueError, KeyError):
        return None


def _stimulus_predictions(design: Design, model, out: Path, head_list, fingerprint: str, progress: bool,
                          report: dict) -> dict:
    """{(condition, index): {head label: (preds, times)}}; cached under out/stimuli."""
    jobs = [(c, i, s) for c, stims in design.conditions.items() for i, s in enumerate(stims)]
    results, records, shared = {}, [], {}
    for c, i, s in _bar(jobs, "predict", progress, "stimulus"):
        identity = s.identity()
        keys, per_head = {}, {}
        # the features timeline is named by the file's identity: a changed file is extracted again
        inputs = _Inputs(model, s, out, f"{s.path.stem}-{cache_key(identity, '', '')[:12]}", shared)
        for label, sid in head_list:
            key = keys[label] = cache_key(identity, fingerprint, label)
            path = out / "stimuli" / f"{key}.npz"
            hit = _cached(path, key) if path.is_file() else None
            if hit is None:
                hit = inputs.predict(sid)
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(path) as f:
                    np.savez(f, preds=hit[0], times=hit[1], key=np.array(key))
                report["written"].append(f"{key}.npz")
            else:
                report["skipped"].append(f"{key}.npz")
            per_head[label] = hit
        results[(c, i)] = per_head
        records.append({"condition": c, **identity, "cache_keys": keys,
                        "n_rows": int(len(next(iter(per_head.values()))[0]))})
    report["records"] = records
    return results


def _summaries(design: Design, predictions: dict, head_list) -> dict:
    """{map label: {condition: (n_stimuli, n_outputs)}}: each stimulus's response over the window's rows (its
    mean or temporal std, ``design.response``); with
    several heads also the group map (the mean over heads of each stimulus's response)."""
    where = design.source or design.name
    maps = {label: {} for label, _ in head_list}
    for c, stims in design.conditions.items():
        for label, _ in head_list:
            rows = []
            for i, s in enumerate(stims):
                preds, times = predictions[(c, i)][label]
                mask = design.window_rows(times)
                if not mask.any():
                    raise DesignError(f"{where}: field 'window': {s.path} has {len(times)} rows of prediction "
                                      f"({len(times)} s); the window {design.window} holds none of them")
                if design.response == "std" and mask.sum() < 2:
                    raise DesignError(f"{where}: field 'response': 'std' needs 2 rows in the window; {s.path} "
                                      f"has {int(mask.sum())}")
                rows.append(summarise_response(preds[mask], how=design.response))
            maps[label][c] = np.stack(rows)
    if len(head_list) > 1:
        maps = {GROUP: {c: np.mean([maps[label][c] for label, _ in head_list], axis=0)
                        for c in design.conditions}, **maps}
    return maps


def _roi_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROI_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.10g}" if isinstance(row[k], float) else row[k]) for k in ROI_COLUMNS})
    return buf.getvalue().encode()


def top_regions(rows: list[dict], space_name: str, n: int = 4) -> list[dict]:
    """The named regions (HCP-MMP1 areas, or structures) at both ends of a contrast: the ``n // 2`` largest positive
    mean effects then the ``n // 2`` most negative ones (one side filled from the other where it runs short)."""
    kind = "structure" if space_name == "subcortical" else "area"
    named = [r for r in rows if r["kind"] == kind and np.isfinite(r["effect"])]
    named = named or [r for r in rows if np.isfinite(r["effect"])]
    positive = sorted((r for r in named if r["effect"] > 0), key=lambda r: -r["effect"])
    negative = sorted((r for r in named if r["effect"] <= 0), key=lambda r: r["effect"])
    n_pos = min(len(positive), max(n // 2, n - len(negative)))
    return positive[:n_pos] + negative[:n - n_pos]


def _test_contrast(design, contrast, values_by_map, regions, space, folder: Path, figures: bool) -> dict:
    """One contrast: the test per map, roi.csv, maps.npz and the figures; its JSON summary."""
    summary, rows_all, arrays, maps = {}, [], {}, {}
    for label, values in values_by_map.items():
        result = stats.contrast_test(values, contrast.weights, name=contrast.name,
                                     n_permutations=design.n_permutations, seed=design.seed, alpha=design.alpha)
        rows = stats.roi_table_rows(values, contrast.weights, result, regions, alpha=design.alpha)
        rows_all += [{"map": label, **r} for r in rows]
        for k in ("effect", "ci_low", "ci_high", "t", "p", "p_fdr", "p_fwe"):
            arrays[f"{label}/{k}"] = getattr(result, k)
        maps[label] = {k: getattr(result, k) for k in ("effect", "t", "p_fdr", "p_fwe")}
        summary[label] = {**result.summary(design.alpha),
                          "top_regions": [{k: r[k] for k in ("region", "kind", "effect", "ci_low", "ci_high",
                                                             "frac_fdr")} for r in top_regions(rows, space.name)]}
    files = {"roi": _write(folder / "roi.csv", _roi_csv(rows_all))}
    with atomic_open(folder / "maps.npz") as f:
        np.savez(f, **arrays)
    files["maps"] = folder / "maps.npz"
    if figures:
        from nforge_jax.viz.contrast import save_contrast_figures  # matplotlib / nilearn: only when drawing

        files.update(save_contrast_figures(folder, contrast.name, maps, space, design.alpha, design.response))
    return {"expression": contrast.expression, "weights": contrast.weights, "maps": summary,
            "files": {k: str(v) for k, v in files.items()}}


def _load(model, cache_folder):
    if isinstance(model, (str, Path)):
        from nforge_jax.inference.model import NForgeModel

        return NForgeModel.from_pretrained(model, cache_folder=cache_folder or "./nforge_cache")
    return model


def run_experiment(design_or_path, model, out, *, cache_folder=None, progress: bool = True,
                   figures: bool = True) -> dict:
    """The experiment (a `Design` or an experiment file) on ``model`` (an ``NForgeModel`` or a checkpoint path,
    converted into ``cache_folder`` when it is a TRIBE v2 release); outputs under ``out`` (module docstring).
    Every check runs before the first prediction. Returns contrast.json's content plus ``out``,
    ``stimuli`` ({"written", "skipped"} cache files), ``stage_seconds`` and ``seconds``."""
    from nforge_jax.data.regions import region_sets
    from nforge_jax.inference import provenance

    t0, out = time.time(), Path(out)
    model = _load(model, cache_folder)
    if isinstance(design_or_path, Design):
        design = design_or_path
        check_against_model(design, model)
    else:
        design = plan_experiment(design_or_path, model)
    head_list = heads(design, model)
    space = model.output_space
    regions = region_sets(space)
    fingerprint = model.fingerprint()
    made = {label: provenance.made_by(model, sid) for label, sid in head_list}
    stages, cache = {}, {"written": [], "skipped": []}
    predictions = _stimulus_predictions(design, model, out, head_list, fingerprint, progress, cache)
    stages["predict"], t = time.time() - t0, time.time()
    values_by_map = _summaries(design, predictions, head_list)
    contrasts = {}
    for contrast in _bar(list(design.contrasts.values()), "contrasts", progress, "contrast"):
        contrasts[contrast.name] = _test_contrast(design, contrast, values_by_map, regions, space,
                                                  out / contrast.name, figures)
    stages["contrasts"] = time.time() - t
    doc = {"design": design.to_dict(), "warnings": list(design.warnings), "model_sha256": fingerprint,
           "space": space.to_dict(), "subjects": [label for label, _ in head_list],
           "maps": list(values_by_map), "made_by": made, "stimuli": cache.pop("records"),
           "contrasts": contrasts, "alpha": design.alpha}
    _write(out / "contrast.json", _json_bytes(doc))
    return {**doc, "out": str(out), "stimuli_cache": cache, "stage_seconds": stages, "seconds": time.time() - t0}


def summary_lines(result: dict) -> list[str]:
    """One line per contrast (its first map: the group's, or the one head's): test, outputs significant after
    FDR and FWE control, largest |t| and the top regions."""
    lines = []
    for name, c in result["contrasts"].items():
        label, s = next(iter(c["maps"].items()))
        top = ", ".join(f"{r['region']} {r['effect']:+.3g} ({100 * r['frac_fdr']:.0f}% FDR)" for r in s["top_regions"])
        others = f"; {len(c['maps']) - 1} subject maps too" if len(c["maps"]) > 1 else ""
        lines.append(f"{name} [{c['expression']}] ({label}; {s['test']}, {s['n_permutations']} "
                     f"{'exact ' if s['exact'] else ''}permutations, n = {s['n_stimuli']}): "
                     f"{s['n_significant_fdr']} / {s['n_outputs']} outputs FDR {s['alpha']:g}, "
                     f"{s['n_significant_fwe']} FWE; max |t| {s['max_abs_t']:.2f}; top: {top}{others}")
    return lines


def roi_table_lines(result: dict, n: int = 6) -> list[str]:
    """A small fixed-width table per contrast: its first map's ``n`` top regions, both ends (from roi.csv)."""
    lines = []
    for name, c in result["contrasts"].items():
        label = next(iter(c["maps"]))
        with open(c["files"]["roi"], newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["map"] == label]
        for r in rows:
            for k in ("effect", "ci_low", "ci_high", "frac_fdr", "frac_fwe"):
                r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
        space = result["space"]["name"]
        lines.append(f"{name} ({label}): {'region':<22} {'effect':>9} {'95% CI':>21} {'FDR':>5} {'FWE':>5}")
        for r in top_regions(rows, space, n):
            ci = f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
            lines.append(f"  {'':<{len(name) + len(label) + 3}}{r['region']:<22} {r['effect']:>+9.3g} {ci:>21} "
                         f"{r['frac_fdr']:>5.2f} {r['frac_fwe']:>5.2f}")
    return lines
