"""The events table: one row per timed thing that happened in a recording (a word, a sentence, an audio
or video file, an fMRI run, a segmentation trigger).

It follows the table TRIBE v2 builds (neuralset 0.0.2 "standardized events"):

- ``type`` is one of :data:`EVENT_TYPES`; ``start`` (s) and ``duration`` (s, >= 0) are finite;
  ``timeline`` names the recording the row belongs to (e.g. ``"Wen2017:run=1,seg=seg3,subject=subject1"``).
- per type: ``Fmri`` needs ``filepath``, ``frequency`` > 0 and ``subject``; ``Audio``/``Video`` need
  ``filepath`` (``frequency`` optional, ``offset`` >= 0 into the file); ``Word``/``Text``/``Sentence``/
  ``Phoneme`` need a non-empty ``text`` (``language``, ``context``, ``modality`` optional).
- ``stop = start + duration`` is (re)computed; ``session``/``task``/``run`` are filled with ``""`` when absent.
- rows are sorted by timeline (first-seen order), start ascending, duration descending (stable), and
  columns start ``type, start, duration, stop, timeline, subject, session, task, run``.

:func:`validate_events` checks and standardises a DataFrame; :func:`make_events` builds one from rows.
Errors are :class:`EventsError` naming the row, the column and what was expected.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "EVENT_TYPES",
    "TEXT_TYPES",
    "FMRI_LAYOUTS",
    "TEXT_MODALITIES",
    "LEADING_COLUMNS",
    "EventsError",
    "validate_events",
    "make_events",
]

TEXT_TYPES = ("Word", "Text", "Sentence", "Phoneme")
EVENT_TYPES = (*TEXT_TYPES, "Audio", "Video", "Image", "Fmri", "CategoricalEvent")
FMRI_LAYOUTS = ("custom", "T1w", "MNI152NLin2009cAsym", "fsaverage", "fmriprep", "deepprep")
TEXT_MODALITIES = ("heard", "read", "imagined", "typed", "caption")
LEADING_COLUMNS = ("type", "start", "duration", "stop", "timeline", "subject", "session", "task", "run")
# Columns filled with "" when absent (BIDS entities, as neuralset does).
_STRING_DEFAULTS = ("subject", "session", "task", "run")


class EventsError(ValueError):
    """An events table row does not satisfy the schema."""


def _row_label(df: pd.DataFrame, pos: int) -> str:
    label = df.index[pos]
    label = label.item() if isinstance(label, np.generic) else label
    typ = df["type"].iloc[pos] if "type" in df.columns else None
    where = f"row {label!r}" if label == pos else f"row {label!r} (position {pos})"
    return f"{where} (type {typ!r})" if isinstance(typ, str) else where


def _fail(df: pd.DataFrame, mask: np.ndarray, column: str, expected: str, source: str) -> None:
    """Raise for the first row where ``mask`` is True."""
    bad = np.flatnonzero(mask)
    if bad.size:
        pos = int(bad[0])
        value = df[column].iloc[pos] if column in df.columns else "<missing column>"
        more = f" ({bad.size - 1} more rows like it)" if bad.size > 1 else ""
        raise EventsError(f"{source}: {_row_label(df, pos)}, column {column!r}: expected {expected}, "
                          f"got {value!r}{more}")


def _as_float(df: pd.DataFrame, column: str, source: str) -> np.ndarray:
    col = df[column]
    num = pd.to_numeric(col, errors="coerce")
    not_number = num.isna().to_numpy() & col.notna().to_numpy()
    is_bool = col.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    _fail(df, not_number | is_bool, column, "a number", source)
    return num.to_numpy(dtype=np.float64, na_value=np.nan)


def _nonempty_str(values: pd.Series) -> np.ndarray:
    return values.map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy(dtype=bool)


def validate_events(df: pd.DataFrame, *, source: str = "events") -> pd.DataFrame:
    """Check ``df`` against the events schema and return a standardised copy (sorted, ``stop`` added).

    ``source`` names where the table came from (a file path, a study) in error messages.
    """
    df = _standard_frame(df, source)
    _check_common_columns(df, source)
    t = df["type"].to_numpy()
    is_fmri = t == "Fmri"
    is_media = np.isin(t, ("Audio", "Video", "Image"))
    _check_file_columns(df, is_fmri, is_media, source)
    _check_text_columns(df, np.isin(t, TEXT_TYPES), source)
    df["stop"] = df["start"] + df["duration"]
    return _tribe_order(df)


def _standard_frame(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """A copy of ``df`` with the required columns checked and the optional ones defaulted."""
    if not isinstance(df, pd.DataFrame):
        raise EventsError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise EventsError(f"{source}: duplicated column(s) {dup}")
    for column in ("type", "start", "timeline"):
        if column not in df.columns:
            raise EventsError(f"{source}: missing required column {column!r} (columns: {list(df.columns)})")
    df = df.copy()
    if "duration" not in df.columns:
        df["duration"] = 0.0
    for column in _STRING_DEFAULTS:
        if column not in df.columns:
            df[column] = ""
        else:
            df[column] = df[column].where(df[column].notna(), "")
    return df


def _check_common_columns(df: pd.DataFrame, source: str) -> None:
    """type, timeline, the string columns, and start / duration (made float seconds in place)."""
    _fail(df, ~df["type"].isin(EVENT_TYPES).to_numpy(), "type", f"one of {list(EVENT_TYPES)}", source)
    _fail(df, ~_nonempty_str(df["timeline"]), "timeline", "a non-empty string", source)
    for column in _STRING_DEFAULTS:
        _fail(df, ~df[column].map(lambda v: isinstance(v, str)).to_numpy(dtype=bool), column, "a string", source)
    start = _as_float(df, "start", source)
    _fail(df, ~np.isfinite(start), "start", "a finite number of seconds", source)
    dur = _as_float(df, "duration", source)
    dur = np.where(df["duration"].isna().to_numpy(), 0.0, dur)
    _fail(df, ~np.isfinite(dur) | (dur < 0), "duration", "a finite number of seconds >= 0", source)
    df["start"] = start
    df["duration"] = dur


def _need_column(df: pd.DataFrame, column: str, rows: np.ndarray, source: str) -> None:
    if rows.any() and column not in df.columns:
        pos = int(np.flatnonzero(rows)[0])
        raise EventsError(f"{source}: {_row_label(df, pos)}: column {column!r} is required for "
                          f"{df['type'].iloc[pos]} events but the table has no such column")


def _check_file_columns(df: pd.DataFrame, is_fmri: np.ndarray, is_media: np.ndarray, source: str) -> None:
    """filepath, frequency, subject, layout and offset of the Fmri and media rows (standardised in place)."""
    _need_column(df, "filepath", is_fmri | is_media, source)
    if "filepath" in df.columns:
        ok = df["filepath"].map(lambda v: isinstance(v, str) and v != "" or hasattr(v, "__fspath__"))
        _fail(df, (is_fmri | is_media) & ~ok.to_numpy(dtype=bool), "filepath", "a non-empty file path", source)
        df["filepath"] = df["filepath"].map(lambda v: str(v) if hasattr(v, "__fspath__") else v)

    _need_column(df, "frequency", is_fmri, source)
    if "frequency" in df.columns:
        freq = _as_float(df, "frequency", source)
        _fail(df, is_fmri & ~(freq > 0), "frequency", "a sampling frequency in Hz > 0 (1 / TR)", source)
        present = ~np.isnan(freq)
        _fail(df, present & ~(np.isfinite(freq) & (freq > 0)), "frequency", "a frequency in Hz > 0", source)
        df["frequency"] = freq
    _fail(df, is_fmri & ~_nonempty_str(df["subject"]), "subject", "a non-empty subject id for Fmri events",
          source)
    if "layout" in df.columns:
        lay = df["layout"]
        given = lay.notna().to_numpy() & (lay != "").to_numpy()
        _fail(df, is_fmri & given & ~lay.isin(FMRI_LAYOUTS).to_numpy(), "layout",
              f"one of {list(FMRI_LAYOUTS)}", source)

    if "offset" in df.columns:
        off = _as_float(df, "offset", source)
        off = np.where(np.isnan(off), 0.0, off)
        _fail(df, ~np.isfinite(off) | (off < 0), "offset", "seconds into the file >= 0", source)
        df["offset"] = off
    elif is_media.any():
        df["offset"] = 0.0


def _check_text_columns(df: pd.DataFrame, is_text: np.ndarray, source: str) -> None:
    _need_column(df, "text", is_text, source)
    if "text" in df.columns:
        _fail(df, is_text & ~_nonempty_str(df["text"]), "text", "a non-empty string", source)
    for column in ("language", "context", "sentence"):
        if column in df.columns:
            v = df[column]
            ok = v.isna().to_numpy() | v.map(lambda x: isinstance(x, str)).to_numpy(dtype=bool)
            _fail(df, ~ok, column, "a string", source)
    if "modality" in df.columns:
        v = df["modality"]
        given = v.notna().to_numpy() & (v != "").to_numpy()
        _fail(df, is_text & given & ~v.isin(TEXT_MODALITIES).to_numpy(), "modality",
              f"one of {list(TEXT_MODALITIES)}", source)


def _tribe_order(df: pd.DataFrame) -> pd.DataFrame:
    """TRIBE order: timelines in first-seen order, then start ascending, duration descending; ties stable.
    The schema's leading columns first."""
    first_seen = {name: i for i, name in enumerate(pd.unique(df["timeline"]))}
    keys = pd.DataFrame({"tl": df["timeline"].map(first_seen).to_numpy(), "start": df["start"].to_numpy(),
                         "neg": -df["duration"].to_numpy()})
    order = keys.sort_values(["tl", "start", "neg"], kind="mergesort").index.to_numpy() if len(df) else np.arange(0)
    df = df.iloc[order].reset_index(drop=True)
    rest = [c for c in df.columns if c not in LEADING_COLUMNS]
    return df[[*LEADING_COLUMNS, *rest]]


def make_events(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, *, source: str = "events") -> pd.DataFrame:
    """Build a validated, standardised events table from dict rows (or a DataFrame)."""
    if isinstance(rows, pd.DataFrame):
        return validate_events(rows, source=source)
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise EventsError(f"{source}: row {i}: expected a mapping of column -> value, got {type(row).__name__}")
    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=["type", "start", "timeline"])
    return validate_events(df, source=source)
