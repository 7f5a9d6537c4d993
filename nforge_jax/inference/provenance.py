"""What made a result, and whether two things may be paired: the one place that writes and compares provenance.

A result paired with the wrong thing (another subject's head scored against a run, two checkpoints in one
prediction directory, features of another rate) is a plausible brain map with exit code 0, the worst failure
this project can have. So every artifact records what made it, and every entry point that pairs two artifacts
compares those records here, refusing in one line that names both sides:

* ``made_by(model, subject_id)`` -- the model side of a prediction: the weights fingerprint (sha256 of config,
  subject names and parameter bytes), the subject *name* whose head was used (``"average"`` for the shared
  row) and the store subjects that head was fitted on, the feature rate, the extraction recipe and the output
  space. Written into an ``nforge predict`` directory's marker and every per-timeline record, evaluations,
  variance-share results and in-silico experiments.
* ``timeline_identity(store, name)`` -- the input side: study, subject (``"<study>/<subject>"``; None for a
  timeline without fMRI, which records no one), stimulus and repeat.
* checks: ``check_same_maker`` (shards of one directory, records against their marker),
  ``check_subject`` (a head against a recorded run), ``check_feature_rate``, ``check_durations`` (features and fMRI
  of one run), ``check_one_subject`` (adaptation's calibration runs), ``check_unique`` (a timeline never paired
  with itself), ``confined_file`` (record paths).

A deliberate mismatch (a subject's head on another subject's runs, to study transfer; features of another
recipe) is allowed by an explicit flag (``allow_other_subject``, ``allow_other_recipe``); the flag is recorded in
``made_by["allowed"]`` and the notes it produces are carried into summaries and JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from nforge_jax.data import timebase
from nforge_jax.data.splits import subject_key

__all__ = ["ProvenanceMismatch", "PROVENANCE_VERSION", "AVERAGE", "made_by", "subject_label", "subject_keys",
           "model_feature_hz", "timeline_identity", "recorded_subject", "check_same_maker", "check_subject",
           "check_feature_rate", "check_durations", "check_one_subject", "check_unique", "confined_file",
           "describe_maker", "OVERRIDES"]

PROVENANCE_VERSION = 1
AVERAGE = "average"
# Fields of `made_by` that must agree for two results to come from one run of one model.
MAKER_FIELDS = ("model_sha256", "subject", "feature_hz", "extract_recipe", "space", "allowed")
OVERRIDES = {"other_subject": "--allow-other-subject (allow_other_subject=True)",
             "other_recipe": "--allow-other-recipe (allow_other_recipe=True)"}


class ProvenanceMismatch(ValueError):
    """Two things paired that were made differently (another model, subject, rate, recipe or input)."""


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def _short(value) -> str:
    if isinstance(value, str) and len(value) > 16 and " " not in value:
        return f"{value[:12]}..."
    return repr(value)


# ------------------------------------------------------------------------------------------ the model side

def model_feature_hz(config) -> float:
    """Feature rows per second the encoder reads: ``window_steps`` rows per ``n_output_timesteps`` 1 s TRs."""
    return float(config.window_steps) / float(config.n_output_timesteps) * timebase.FMRI_HZ


def _metadata(model) -> dict:
    meta = getattr(model, "metadata", None)
    return meta if isinstance(meta, dict) else {}


def _adapted(model, subject_id: int) -> dict | None:
    for entry in _metadata(model).get("adapted_subjects") or []:
        if isinstance(entry, dict) and entry.get("id") == subject_id:
            return entry
    return None


def subject_label(model, subject_id: int | None) -> str:
    """The name of the head ``subject_id`` (``"average"`` for None): the training subject's name, an adapted
    subject's ``--name``, else ``"subject <id>"`` for a model that names none."""
    if subject_id is None:
        return AVERAGE
    names = _metadata(model).get("subjects")
    if isinstance(names, (list, tuple)) and 0 <= subject_id < len(names):
        return str(names[subject_id])
    adapted = _adapted(model, subject_id)
    if adapted is not None and adapted.get("name"):
        return str(adapted["name"])
    return f"subject {subject_id}"


def subject_keys(model, subject_id: int | None) -> list[str]:
    """The store subjects (``"<study>/<subject>"``) the head ``subject_id`` was fitted on: a training subject's own
    key, an adapted subject's calibration subject; [] when the model does not say (nothing to check)."""
    if subject_id is None:
        return []
    adapted = _adapted(model, subject_id)
    if adapted is not None:
        return [str(k) for k in adapted.get("calibration_subjects") or []]
    names = _metadata(model).get("subjects")
    if isinstance(names, (list, tuple)) and 0 <= subject_id < len(names) and "/" in str(names[subject_id]):
        return [str(names[subject_id])]
    return []


def made_by(model, subject_id: int | None, *, allowed: Iterable[str] = ()) -> dict:
    """What a prediction of ``model``'s head ``subject_id`` is made by (see the module docstring)."""
    allowed = sorted(set(allowed))
    unknown = [a for a in allowed if a not in OVERRIDES]
    if unknown:
        raise ValueError(f"allowed: unknown override {unknown[0]!r}; expected some of {sorted(OVERRIDES)}")
    config = model.config
    # a bare FmriEncoder (library use) has no checkpoint to fingerprint and records no space
    fingerprint = model.fingerprint() if hasattr(model, "fingerprint") else None
    space = model.output_space.to_dict() if hasattr(model, "output_space") else None
    return {"provenance": PROVENANCE_VERSION, "model_sha256": fingerprint,
            "subject": subject_label(model, subject_id),
            "subject_index": None if subject_id is None else int(subject_id),
            "subject_keys": subject_keys(model, subject_id), "feature_hz": model_feature_hz(config),
            "extract_recipe": _metadata(model).get("extract_recipe"), "space": space,
            "allowed": allowed}


def describe_maker(made: Mapping) -> str:
    """``"subject sub-01's head of model 1a2b3c4d5e6f"`` (``"the average subject's head ..."``), for summaries."""
    who = "the average subject's head" if made.get("subject") == AVERAGE else f"subject {made.get('subject')}'s head"
    text = f"{who} of model {str(made.get('model_sha256', '?'))[:12]}"
    if made.get("allowed"):
        text += f" (allowed: {', '.join(made['allowed'])})"
    return text


def check_same_maker(expected: Mapping, got: Mapping, *, expected_what: str, got_what: str,
                     remedy: str) -> None:
    """ProvenanceMismatch naming the first field of ``MAKER_FIELDS`` on which two results' makers differ."""
    for field in MAKER_FIELDS:
        a, b = expected.get(field), got.get(field)
        if _json(a) != _json(b):
            what = {"model_sha256": "checkpoints", "subject": "subjects' heads", "feature_hz": "feature rates",
                    "extract_recipe": "extraction recipes", "space": "output spaces",
                    "allowed": "overrides"}[field]
            raise ProvenanceMismatch(f"{got_what} and {expected_what} come from different {what}: {field} is "
                                     f"{_short(b)} there, {_short(a)} in {expected_what}; {remedy}")


# ------------------------------------------------------------------------------------------ the input side

def recorded_subject(store, name: str) -> str | None:
    """``"<study>/<subject>"`` of a timeline that holds a recording (fMRI), else None: features alone (a movie
    extracted for prediction) belong to no subject."""
    manifest = store.manifest(name)
    if "fmri" not in manifest.get("arrays", {}):
        return None
    meta = manifest.get("meta", {})
    if "study" not in meta or "subject" not in meta:
        return None
    return subject_key(meta)


def timeline_identity(store, name: str) -> dict:
    """{"timeline", "study", "subject" (recorded subject or None), "stimulus", "repeat"} of a store timeline."""
    meta = store.meta(name)
    return {"timeline": name, "study": meta.get("study"), "subject": recorded_subject(store, name),
            "stimulus": meta.get("stimulus"), "repeat": meta.get("repeat")}


def check_subject(made: Mapping, store, name: str, *, allow_other_subject: bool, where: str) -> str | None:
    """None when the head of ``made`` may be paired with timeline ``name`` (the average subject, a timeline
    without a recording, a head the model does not tie to a store subject, or the head's own subject); a note
    when it is another subject's run and ``allow_other_subject``; else ProvenanceMismatch naming both."""
    recorded = recorded_subject(store, name)
    keys = list(made.get("subject_keys") or [])
    if recorded is None or made.get("subject") == AVERAGE or not keys or recorded in keys:
        return None
    head = made.get("subject")
    if allow_other_subject:
        return f"subject {head}'s head on timeline {name!r} of subject {recorded}"
    raise ProvenanceMismatch(f"{where}: predictions use subject {head}'s head, store timeline {name!r} is subject "
                             f"{recorded}; pass {OVERRIDES['other_subject']} to pair them anyway (transfer), or "
                             "pick that subject's head with --subject")


def check_feature_rate(store, name: str, feature_hz: float, *, what: str = "the model") -> None:
    """ValueError when timeline ``name``'s features (meta ``feature_hz``) are not at ``feature_hz``: rows of
    another rate are read as if they were 2 Hz, half (or twice) the stimulus time, misaligned with the fMRI."""
    hz = store.meta(name).get("feature_hz", timebase.FEATURE_HZ)
    if not isinstance(hz, (int, float)) or isinstance(hz, bool) or not math.isclose(float(hz), feature_hz):
        raise ValueError(f"timeline {name!r} of {store.path}: meta feature_hz is {hz!r}, {what} reads features at "
                         f"{feature_hz:g} Hz; extract the features again at {feature_hz:g} Hz")


def check_durations(store, name: str) -> None:
    """ValueError when timeline ``name``'s features and fMRI cover very different lengths of time
    (``timebase.duration_mismatch``): only their overlap would be fitted or scored, without a word."""
    problem = timebase.duration_mismatch(store.manifest(name))
    if problem:
        raise ProvenanceMismatch(f"timeline {name!r} of {store.path}: {problem}")


def check_one_subject(store, names: Sequence[str], *, what: str) -> str | None:
    """The one recorded subject of ``names`` (None if none records one); ValueError naming two timelines of
    different subjects."""
    first = None
    for name in names:
        subject = recorded_subject(store, name)
        if subject is None:
            continue
        if first is None:
            first = (name, subject)
        elif subject != first[1]:
            raise ProvenanceMismatch(f"{what}: timelines {first[0]!r} (subject {first[1]}) and {name!r} (subject "
                                     f"{subject}) are runs of different subjects; calibrate one subject at a time")
    return None if first is None else first[1]


def check_unique(names: Sequence[str], what: str) -> list[str]:
    """``names`` as a list; ValueError naming a timeline given twice (it would be paired with itself: a repeat
    of itself, twice the training rows)."""
    names = list(names)
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: timeline {name!r} is given twice; give each timeline once")
        seen.add(name)
    return names


def confined_file(directory: Path, file, where: str) -> Path:
    """``directory / file`` for a record's ``file`` that is a plain file name inside ``directory``; ValueError
    otherwise (a record pointing elsewhere would score another directory's arrays)."""
    directory = Path(directory)
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise ValueError(f"{where}: field 'file' is {file!r}, expected a file name inside {directory}")
    path = directory / file
    if path.resolve().parent != directory.resolve():
        raise ValueError(f"{where}: field 'file' {file!r} resolves outside {directory}")
    return path
