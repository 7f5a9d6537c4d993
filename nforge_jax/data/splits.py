"""Subjects, sampling weights and the train/val split of a FeatureStore's timelines (TRIBE v2's rules)."""

from __future__ import annotations

import collections
import hashlib
from typing import Iterable, Mapping

from nforge_jax.data.store import FeatureStore, PipelineError

__all__ = ["SPLIT_ATTRIBUTES", "RECORDING_HOURS", "subject_key", "store_timelines", "make_subjects_index",
           "subject_weights", "parse_timeline_name", "split_timelines"]

# Attribute hashed by the train/val split, per study (TRIBE v2 SPLIT_ATTRIBUTES); others use the timeline.
SPLIT_ATTRIBUTES = {"Algonauts2025Bold": "chunk", "Lebel2023Bold": "task", "Wen2017": "seg",
                    "Lahner2024Bold": "timeline"}
# Hours of fMRI per subject that TRIBE v2 weighs subjects by (recording_time weighting).
RECORDING_HOURS = {
    **{f"Algonauts2025Bold/sub-0{i}": 66.4 for i in (1, 2, 3, 5)},
    **{f"Lahner2024Bold/{i}": 6.2 for i in range(1, 11)},
    "Lebel2023Bold/UTS01": 17.9, "Lebel2023Bold/UTS02": 18.1, "Lebel2023Bold/UTS03": 18.1,
    "Lebel2023Bold/UTS04": 6.2, **{f"Lebel2023Bold/UTS0{i}": 6.4 for i in range(5, 9)},
    **{f"Wen2017/subject{i}": 11.7 for i in (1, 2, 3)},
}



def subject_key(meta: Mapping) -> str:
    """``"<study>/<subject>"`` (TRIBE's subject column), unless the subject already carries the study."""
    study, subject = str(meta["study"]), str(meta["subject"])
    return subject if subject.startswith(study + "/") else f"{study}/{subject}"


def store_timelines(store: FeatureStore, timelines: Iterable[str] | None) -> list[str]:
    if timelines is None:
        return store.timelines
    timelines = list(timelines)
    present = set(store.timelines)
    missing = [t for t in timelines if t not in present]
    if missing:
        raise PipelineError(f"{len(missing)} timeline(s) not in the store {store.path}: {missing[:3]}")
    return timelines


def make_subjects_index(store: FeatureStore, timelines: Iterable[str] | None = None) -> dict[str, int]:
    """Subject key -> index, enumerating subjects by study then subject (sorted)."""
    keys = sorted({subject_key(store.meta(t)) for t in store_timelines(store, timelines)})
    return {k: i for i, k in enumerate(keys)}


def subject_weights(store: FeatureStore, timelines: Iterable[str] | None = None, *,
                    weigh_by: str = "recording_time") -> dict[str, float]:
    """Per-subject sampling weights.

    ``"recording_time"``: hours of fMRI of the subject in ``timelines`` (what TRIBE v2 weighs by; its
    published per-subject hours are in :data:`RECORDING_HOURS`); ``"uniform"``: 1 per subject.
    """
    if weigh_by not in ("recording_time", "uniform"):
        raise PipelineError(f"weigh_by: expected 'recording_time' or 'uniform', got {weigh_by!r}")
    weights: dict[str, float] = collections.defaultdict(float)
    for t in store_timelines(store, timelines):
        m = store.manifest(t)
        key = subject_key(m["meta"])
        if weigh_by == "uniform":
            weights[key] = 1.0
        elif "fmri" in m["arrays"]:
            weights[key] += m["arrays"]["fmri"]["shape"][0] / m["meta"]["fmri_hz"] / 3600.0
        else:
            weights[key] += 0.0
    return dict(weights)


def parse_timeline_name(name: str) -> dict[str, str]:
    """``"Wen2017:run=1,seg=seg3,subject=subject1"`` -> {"study": "Wen2017", "run": "1", ...}."""
    study, _, rest = name.partition(":")
    out = {"study": study}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if eq:
            out[key] = value
    return out


def _unit_hash(value: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_value(store: FeatureStore, name: str, attributes: Mapping[str, str] | None = None) -> str:
    """Timeline ``name``'s value of its study's split attribute (``attributes``, default :data:`SPLIT_ATTRIBUTES`;
    ``"timeline"`` for studies not listed): read from its meta, else from its name (``key=value`` parts);
    ``"timeline"`` means the name itself."""
    meta = store.meta(name)
    attr = (SPLIT_ATTRIBUTES if attributes is None else attributes).get(meta["study"], "timeline")
    if attr == "timeline":
        return name
    if attr in meta:
        return str(meta[attr])
    value = parse_timeline_name(name).get(attr)
    if value is None:
        raise PipelineError(f"timeline {name!r} (study {meta['study']!r}): split attribute {attr!r} is "
                            "neither in its meta nor in its name; add it to the meta when writing")
    return value


def split_timelines(store: FeatureStore, timelines: Iterable[str] | None = None, *, val_ratio: float = 0.1,
                    attributes: Mapping[str, str] | None = None, seed: int = 42) -> tuple[list[str], list[str]]:
    """Deterministic train/val split of timelines by a hashed per-timeline attribute.

    The attribute's value per timeline is :func:`split_value`'s. A value goes to val when
    ``sha256(seed:value)`` maps below ``val_ratio``; a study with no val value gets its last value (sorted)
    moved to val. All timelines sharing a value land on the same side. Returns (train, val), sorted.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise PipelineError(f"val_ratio: expected a number in [0, 1), got {val_ratio!r}")
    attributes = SPLIT_ATTRIBUTES if attributes is None else attributes
    by_study: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for t in store_timelines(store, timelines):
        by_study[store.meta(t)["study"]][split_value(store, t, attributes)].append(t)
    train, val = [], []
    for study, values in by_study.items():
        names = sorted(values)
        val_values = {v for v in names if _unit_hash(v, seed) < val_ratio}
        if val_ratio > 0 and not val_values:
            val_values = {names[-1]}
        for v in names:
            (val if v in val_values else train).extend(values[v])
    return sorted(train), sorted(val)

