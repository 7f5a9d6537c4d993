"""The input checks every prediction entry point shares (predict_features, predict_events, predict_store,
streaming, attribution, attention, adaptation): one function per concern, so each rule and its message live in
one place. Feature shapes are checked by the model's own validator (`model.encoder.check_features`).
"""

from __future__ import annotations

import numpy as np

from nforge_jax.data.timebase import feature_row
from nforge_jax.model.encoder import check_features

__all__ = ["resolve_subject", "readout_row", "check_batch_size", "check_features", "feature_start_row",
           "check_finite"]


def _subject_names(model) -> dict[str, int]:
    """{name: index} of the training subjects (metadata ``subjects``) and the adapted ones (``adapted_subjects``:
    a converted release names no training subject, but ``nforge adapt --name`` names the heads it adds)."""
    meta = getattr(model, "metadata", None) or {}
    if not isinstance(meta, dict):
        return {}
    names = meta.get("subjects")
    out = {str(n): i for i, n in enumerate(names)} if isinstance(names, (list, tuple)) else {}
    for entry in meta.get("adapted_subjects") or []:
        if isinstance(entry, dict) and entry.get("name") and isinstance(entry.get("id"), int):
            out.setdefault(str(entry["name"]), int(entry["id"]))
    return out


def _by_short_name(names: dict[str, int], subject: str) -> int | None:
    """The index of the one name ``"<study>/<subject>"`` whose subject part is ``subject`` (None: none or several)."""
    hits = [i for n, i in names.items() if "/" in n and n.rsplit("/", 1)[1] == subject]
    return hits[0] if len(hits) == 1 else None


def resolve_subject(model, subject) -> int | None:
    """The training-subject index for ``subject``, or None for the shared average subject.

    model: an ``NForgeModel`` (its ``metadata["subjects"]`` names the training subjects) or anything with a
    ``config`` (an ``FmriEncoder``), or an ``EncoderConfig``. subject: None or "average" (the average subject,
    as provenance records name it; a new subject may not take that name), an index in [0, n_subjects), a
    training-subject name, or a string of digits (an index, as typed on a command line).
    """
    config = getattr(model, "config", model)
    n = int(config.n_subjects)
    names = _subject_names(model)
    if subject is None or isinstance(subject, str) and subject == "average":
        if not config.has_average_subject:
            raise ValueError(f"subject={subject!r} needs the shared average-subject row, which this model lacks; "
                             f"pass a training-subject index in [0, {n})")
        return None
    index = subject
    if isinstance(subject, str):
        if subject in names:
            return names[subject]
        if "/" not in subject and _by_short_name(names, subject) is not None:
            return _by_short_name(names, subject)  # "sub-01" for "Wen2017/sub-01" when only one study has it
        if not subject.strip().isdigit():
            listed = list(names)
            known = f"known names: {listed[:10]}{'...' if len(listed) > 10 else ''}" if names else "it names none"
            raise ValueError(f"subject={subject!r}: not a training subject of this model ({known}; indices "
                             f"0..{n - 1}); pass None for the average subject")
        index = int(subject)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"subject: expected None (average subject), a training-subject name or an integer in "
                         f"[0, {n}) (this model has {n} training subjects), got {subject!r}")
    return int(index)


def readout_row(config, subject_id: int | None) -> int:
    """The read-out row of a resolved subject: the average row (last) for None."""
    return int(config.n_subjects) if subject_id is None else int(subject_id)


def check_batch_size(value, what: str = "batch_size") -> int | None:
    """None (the default) or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: expected a positive integer, got {value!r}")
    return int(value)


def feature_start_row(start_s: float, where: str) -> int:
    """Row of the 2 Hz feature grid (row k = timeline time [k/2, (k+1)/2)) at which a prediction starting at
    ``start_s`` seconds reads its features. Features begin at time 0: an earlier start has no features to
    read (slicing from a negative row would take them from the end), so it is refused."""
    if isinstance(start_s, bool) or not isinstance(start_s, (int, float, np.integer, np.floating)) \
            or not np.isfinite(start_s):
        raise ValueError(f"{where}: start {start_s!r} is not a finite number of seconds")
    start_s = float(start_s)
    row = feature_row(start_s)
    if row < 0:
        raise ValueError(f"{where}: starts at {start_s:g} s, before time 0 where its features begin; expected "
                         "start times >= 0 (shift the events / start_s so that the stimulus starts at 0 s)")
    return row


def check_finite(array, where: str, row_offset: int = 0) -> None:
    """ValueError naming ``where`` and the first row (counted from ``row_offset``) holding NaN or inf."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.inexact):
        return
    finite = np.isfinite(a)
    if finite.all():
        return
    bad = finite.reshape(len(a), -1).all(axis=1) if a.ndim > 1 else finite
    row = int(np.flatnonzero(~bad)[0])
    value = a[row][~finite[row]].flat[0] if a.ndim > 1 else a[row]
    raise ValueError(f"{where}: row {row + row_offset} holds {value} (features must be finite numbers; "
                     "NaN or inf would make every prediction of its window NaN)")
