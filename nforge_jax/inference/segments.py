"""From an events table to predicted brain responses (TRIBE v2's ``predict``).

:func:`predict_events` (TRIBE v2's ``predict``; D.4): per timeline, the span from its earliest event start
s0 to its latest stop is covered by windows of ``n_output_timesteps`` one-second TRs from s0; features
(row k = timeline time [k/2, (k+1)/2)) are taken from row round(2 s0), modalities without events are
absent (exact zeros); each output row j is the 1 s segment [s0 + j, s0 + j + 1) of stimulus time (the
BOLD response to it peaks ~5 s later; the model was trained with that offset). Segments that overlap no
event are dropped (``remove_empty_segments``). Rows of all timelines are concatenated in timeline order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
import pandas as pd

from nforge_jax.data.events import validate_events
from nforge_jax.data.timebase import FEATURE_HZ, cut_windows, n_windows
from nforge_jax.inference.checks import (check_batch_size, check_features, check_finite, feature_start_row,
                                         resolve_subject)

__all__ = ["Segment", "segments_for", "default_extract_config", "timeline_features", "predict_events",
           "resolve_subject"]


@dataclasses.dataclass(frozen=True)
class Segment:
    """One predicted row: the 1 s span [start, start + duration) of stimulus time in ``timeline``."""

    timeline: str
    start: float
    duration: float = 1.0

    @property
    def stop(self) -> float:
        return self.start + self.duration


def _span(events: pd.DataFrame) -> tuple[float, float]:
    rows = events[events["type"] != "Fmri"]
    rows = rows if not rows.empty else events
    return float(rows["start"].min()), float((rows["start"] + rows["duration"]).max())


def segments_for(events: pd.DataFrame, timeline: str, s0: float, n_rows: int, *, remove_empty: bool = True
                 ) -> tuple[list[Segment], np.ndarray]:
    """The n_rows 1 s segments from s0, and the mask of those that overlap an event of the timeline.

    Overlap: event.start < segment.stop and event.stop > segment.start (an instantaneous event counts in
    the segment containing its start).
    """
    starts = s0 + np.arange(n_rows, dtype=np.float64)
    keep = np.ones(n_rows, bool)
    if remove_empty:
        ev = events[events["type"] != "Fmri"] if (events["type"] != "Fmri").any() else events
        a = ev["start"].to_numpy(float)[None, :]
        b = (ev["start"] + ev["duration"]).to_numpy(float)[None, :]
        lo, hi = starts[:, None], starts[:, None] + 1.0
        overlap = (a < hi) & (b > lo)
        point = (a == b) & (a >= lo) & (a < hi)
        keep = (overlap | point).any(1)
    return [Segment(timeline, float(s)) for s in starts], keep


def default_extract_config(model_config):
    """Extractor settings for a checkpoint that records no recipe, chosen by the (n_layers, dim) the model
    takes: 2 layers -> TRIBE v2's release recipe; as many as the project's default fractions -> the
    defaults ("cat")."""
    from nforge_jax.extract.recipe import ExtractConfig

    cfg, release = ExtractConfig(), ExtractConfig.tribev2_release()
    parts, mods = {}, []
    for m, n_layers, _ in model_config.feature_dims:
        if m not in ("text", "audio", "video"):
            continue
        mods.append(m)
        if n_layers == 2:
            parts[m] = getattr(release, m)
        elif n_layers == len(getattr(cfg, m).layers):
            parts[m] = getattr(cfg, m)
        else:
            raise ValueError(f"the model takes {n_layers} {m} layers; pass extract_config= with {n_layers} "
                             f"layer fractions ('cat') for {m}")
    return dataclasses.replace(cfg, modalities=tuple(mods), **parts)


def timeline_features(events: pd.DataFrame, *, extract_config=None, model_config=None, store=None,
                      extractors=None) -> dict[str, dict[str, np.ndarray]]:
    """{timeline: {modality: (T, L, D)}} extracted from the events (PyTorch extractors, loaded once).

    With ``store`` (a FeatureStore path), features are extracted into it (resumable, reused next time)
    and read back from it.
    """
    from nforge_jax.extract.run import build_extractors, check_sources, extract_events, extract_timeline

    config = extract_config or default_extract_config(model_config)
    names = list(pd.unique(events["timeline"]))
    if store is not None:
        from nforge_jax.data.store import FeatureStore

        extract_events(events, store, config, extractors=extractors)
        fs = FeatureStore.open(store)
        return {n: ({m: np.asarray(fs.features(n, m), np.float32) for m in fs.modalities(n)} if n in fs else {})
                for n in names}
    extractors = extractors or build_extractors(config)
    check_sources(events, extractors)
    return {n: extract_timeline(events[events["timeline"] == n], extractors)[0] for n in names}


def predict_events(model, events: pd.DataFrame, *, subject=None, features: Mapping | None = None,
                   extract_config=None, store=None, remove_empty_segments: bool = True, batch_size: int | None = None,
                   verbose: bool = False) -> tuple[np.ndarray, list[Segment]]:
    """``(preds (n_segments, n_vertices) float32, segments)`` for an events table (module docstring).

    features: precomputed {timeline: {modality: (T, L, D)}} on the 2 Hz grid of timeline time (or, with a
    single timeline, {modality: array}); None extracts them (PyTorch extractors, ``extract_config``
    defaulting to :func:`default_extract_config`; ``store`` caches them in a FeatureStore).
    """
    events = validate_events(events)
    if events.empty:
        raise ValueError("predict: the events table is empty")
    config = model.config
    names = list(pd.unique(events["timeline"]))
    # Checked before any (slow) feature extraction.
    subject_id = resolve_subject(model, subject)
    batch_size = check_batch_size(batch_size)
    for name in names:
        feature_start_row(_span(events[events["timeline"] == name])[0], f"timeline {name!r}")
    if features is None:
        # the recipe the checkpoint records (a converted release: the release's) unless one is given
        extract_config = extract_config or model.extract_config
        features = timeline_features(events, extract_config=extract_config, model_config=config, store=store)
    elif not all(isinstance(v, Mapping) for v in features.values()):
        if len(names) != 1:
            raise ValueError(f"features: a {{modality: array}} dict needs a single timeline; the events have {names}")
        features = {names[0]: features}
    window = int(config.window_steps)
    all_preds, all_segments = [], []
    for name in names:
        tl = events[events["timeline"] == name]
        s0, end = _span(tl)
        # the windows covering [s0, end); the tolerance keeps a span of whole windows from taking one more
        n_win = n_windows(math.ceil((end - s0) * FEATURE_HZ - 1e-9 * window), window)
        r0 = feature_start_row(s0, f"timeline {name!r}")
        feats = {m: arr for m, arr in (features.get(name) or {}).items() if m in config.modalities}
        for m, arr in feats.items():
            try:
                check_features(config, {m: arr}, leads=(("T",),), where=f"features[{name!r}]")
            except ValueError as e:
                raise ValueError(f"{e}; extract with matching layer fractions (extract_config=)") from None
            feats[m] = np.asarray(arr)[r0: r0 + n_win * window]
            check_finite(feats[m], f"timeline {name!r} features[{m!r}]", row_offset=r0)
        if not feats:
            raise ValueError(f"timeline {name!r}: no features for any of the model's modalities "
                             f"{list(config.modalities)} (events of types {sorted(set(tl['type']))})")
        # n_win zero-padded windows from row r0, flat again: predict_features reads whole windows back
        batch = {m: v.reshape((-1,) + v.shape[2:]) for m, v in cut_windows(feats, window, n_win).items()}
        preds = model.predict_features(batch, subject=subject_id, batch_size=batch_size)
        segs, keep = segments_for(tl, name, s0, preds.shape[0], remove_empty=remove_empty_segments)
        all_preds.append(np.asarray(preds, np.float32)[keep])
        all_segments.extend(s for s, k in zip(segs, keep) if k)
        if verbose:
            print(f"timeline {name!r}: predicted {int(keep.sum())} / {len(keep)} segments")
    preds = np.concatenate(all_preds) if all_preds else np.zeros((0, config.n_outputs), np.float32)
    assert len(all_segments) == preds.shape[0]
    return preds, all_segments
