"""An in-silico experiment file: conditions of stimuli, contrasts between them, checked before any compute.

The file is YAML (read with ``yaml.safe_load``)::

    name: video_vs_audio            # optional; default: the file's stem
    subject: average                # optional: "average" (default), a training-subject name or index,
                                    #   or "all" (every subject's head, plus a group map of their mean)
    window: whole                   # optional: "whole" (default: every TR of the stimulus) or
                                    #   {start: 5, end: 20}, seconds of measured response after onset
    response: mean                  # optional: "mean" (default) response over the window, or "std": its
                                    #   temporal standard deviation (how strongly an output follows the stimulus)
    n_permutations: 1000            # optional (default 1000)
    alpha: 0.05                     # optional (default 0.05)
    seed: 0                         # optional (default 0)
    conditions:                     # name -> list of stimuli (a name is a Python identifier)
      video: [stimuli/video/*.npz]  #   a glob, or a path; relative to the YAML file's folder
      audio: [stimuli/audio/a.npz, stimuli/audio/b.npz]
    contrasts:                      # name -> expression over condition names
      video_vs_audio: video - audio
      video: video                  #   one condition alone: against baseline (sign flip)
      # speech_vs_rest: speech - (music + noise) / 2

A stimulus is a media file (video .mp4 ..., audio .wav ..., text .txt: events, features and prediction as
``NForgeModel.predict`` does), an events table (.csv / .tsv / .parquet, columns as
``get_events_dataframe`` returns, one timeline) or a feature file (.npz: one ``(T, n_layers, dim)`` array at
2 Hz per modality the model takes, and optionally ``_meta``, a JSON string that may record ``extract_recipe``,
``feature_hz`` and ``space``, checked against the checkpoint; :func:`write_feature_stimulus` writes one).

The response window is given in time of the measured response after stimulus onset. The model's output row j
is the BOLD response ``HEMODYNAMIC_OFFSET_S`` = 5 s after stimulus second j (`data.timebase`), so the window
``{start, end}`` averages the rows j with ``start <= j + 5 < end``. A window that ends by 5 s holds no
response and is refused; one that starts before 5 s is warned about (its first seconds hold none).

A contrast is parsed with :mod:`ast` (numbers, condition names, ``+ - * /`` and parentheses; nothing is
evaluated) into weights. Weights summing to zero make a difference (label permutation); a single condition
is tested against baseline (sign flip); anything else is refused. :func:`plan_experiment` refuses, in one
line naming the file and the field, before any prediction: an empty condition, a missing file or a glob that
matches nothing, a stimulus in two conditions one contrast compares, unknown condition names, weights of a
difference that do not sum to zero, too few stimuli for the permutation test (`insilico.stats.check_power`)
and, given the model, feature files of another recipe, rate or output space or with other shapes, and a
subject the model does not have.
"""

from __future__ import annotations

import ast
import glob
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from nforge_jax.data.timebase import HEMODYNAMIC_OFFSET_S
from nforge_jax.insilico.response import SUMMARIES
from nforge_jax.insilico.stats import DesignError, check_power

__all__ = ["Design", "Stimulus", "Contrast", "DesignError", "plan_experiment", "parse_contrast",
           "check_against_model", "write_feature_stimulus", "read_feature_stimulus", "MEDIA_SUFFIXES",
           "EVENTS_SUFFIXES", "FEATURE_SUFFIXES"]

MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".wav", ".mp3", ".flac", ".ogg", ".txt")
EVENTS_SUFFIXES = (".csv", ".tsv", ".parquet")
FEATURE_SUFFIXES = (".npz",)
META_KEY = "_meta"
FIELDS = ("name", "subject", "window", "response", "n_permutations", "alpha", "seed", "conditions", "contrasts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # contrast names become folder names


@dataclass(frozen=True)
class Stimulus:
    """One stimulus file of a condition; ``kind``: "media", "events" or "features"."""

    path: Path
    kind: str

    def identity(self) -> dict:
        """What a cached prediction of this stimulus depends on, from the file: path, size, mtime."""
        st = self.path.stat()
        return {"path": str(self.path), "kind": self.kind, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class Contrast:
    name: str
    expression: str
    weights: dict  # condition -> weight (nonzero only)

    @property
    def test(self) -> str:
        return "sign-flip" if len(self.weights) == 1 else "label-permutation"


@dataclass
class Design:
    """A checked experiment (see the module docstring); ``window`` is None for the whole stimulus."""

    name: str
    conditions: dict  # condition -> [Stimulus]
    contrasts: dict  # name -> Contrast
    subject: object = "average"
    window: tuple | None = None
    response: str = "mean"  # insilico.response.SUMMARIES
    n_permutations: int = 1000
    alpha: float = 0.05
    seed: int = 0
    source: Path | None = None
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": None if self.source is None else str(self.source),
                "subject": self.subject,
                "window": "whole" if self.window is None else {"start": self.window[0], "end": self.window[1]},
                "response": self.response, "n_permutations": self.n_permutations, "alpha": self.alpha, "seed": self.seed,
                "conditions": {c: [str(s.path) for s in stims] for c, stims in self.conditions.items()},
                "contrasts": {n: {"expression": c.expression, "weights": c.weights, "test": c.test}
                              for n, c in self.contrasts.items()}}

    def window_rows(self, times: np.ndarray) -> np.ndarray:
        """The mask of output rows (stimulus seconds ``times`` from onset) whose response lies in the window."""
        times = np.asarray(times, np.float64)
        if self.window is None:
            return np.ones(times.shape, bool)
        response = times + HEMODYNAMIC_OFFSET_S
        return (response >= self.window[0]) & (response < self.window[1])


class _Where:
    """Builds the one-line errors: ``FILE: field 'F': what``."""

    def __init__(self, source):
        self.source = source

    def __call__(self, fieldname: str, text: str) -> DesignError:
        return DesignError(f"{self.source}: field {fieldname!r}: {text}")


def parse_contrast(expression, conditions, where=None, fieldname: str = "contrast") -> dict:
    """``"a - (b + c) / 2"`` -> ``{"a": 1.0, "b": -0.5, "c": -0.5}`` (nonzero weights), through :mod:`ast`."""
    where = where or _Where("contrast")
    if isinstance(expression, bool) or not isinstance(expression, str) or not expression.strip():
        raise where(fieldname, f"expected an expression over condition names such as 'a - b', got {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise where(fieldname, f"{expression!r} is not an expression of condition names, numbers, + - * / "
                               "and parentheses") from None
    terms, constant = _linear(tree.body, expression, where, fieldname)
    unknown = sorted(set(terms) - set(conditions))
    if unknown:
        raise where(fieldname, f"unknown condition(s) {unknown} in {expression!r}; conditions: {sorted(conditions)}")
    if constant != 0:
        raise where(fieldname, f"{expression!r} adds a constant ({constant:g}); a contrast weighs conditions only")
    weights = {c: float(w) for c, w in terms.items() if w != 0}
    if not weights:
        raise where(fieldname, f"{expression!r}: every weight is zero")
    total = sum(weights.values())
    if len(weights) > 1 and not math.isclose(total, 0.0, abs_tol=1e-9):
        raise where(fieldname, f"{expression!r} gives weights {weights} that sum to {total:g}; a difference of "
                               "conditions must sum to zero (e.g. 'a - (b + c) / 2'), or name one condition alone")
    return weights


def _linear(node, expression, where, fieldname):
    """(terms {condition: coefficient}, constant) of an expression node; only linear forms are accepted."""
    bad = where(fieldname, f"{expression!r}: only condition names, numbers, + - * / and parentheses, with "
                           "products and quotients by numbers, make a contrast")
    if isinstance(node, ast.Name):
        return {node.id: 1.0}, 0.0
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return {}, float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        terms, const = _linear(node.operand, expression, where, fieldname)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return {c: sign * w for c, w in terms.items()}, sign * const
    if not isinstance(node, ast.BinOp):
        raise bad
    a, ca = _linear(node.left, expression, where, fieldname)
    b, cb = _linear(node.right, expression, where, fieldname)
    if isinstance(node.op, (ast.Add, ast.Sub)):
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        out = dict(a)
        for c, w in b.items():
            out[c] = out.get(c, 0.0) + sign * w
        return out, ca + sign * cb
    if isinstance(node.op, ast.Mult) and (not a or not b):
        scale, terms, const = (ca, b, cb) if not a else (cb, a, ca)
        return {c: scale * w for c, w in terms.items()}, scale * const
    if isinstance(node.op, ast.Div) and not b:
        if cb == 0:
            raise where(fieldname, f"{expression!r} divides by zero")
        return {c: w / cb for c, w in a.items()}, ca / cb
    raise bad


def _kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    for kind, suffixes in (("media", MEDIA_SUFFIXES), ("events", EVENTS_SUFFIXES), ("features", FEATURE_SUFFIXES)):
        if suffix in suffixes:
            return kind
    return None


def _stimuli(entries, folder: Path, where, fieldname: str) -> list[Stimulus]:
    """The stimuli of one condition's list: paths and globs, relative to ``folder``."""
    if isinstance(entries, (str, Path)):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise where(fieldname, f"expected a non-empty list of stimulus files or glob patterns, got {entries!r}")
    out: list[Stimulus] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            raise where(f"{fieldname}[{i}]", f"expected a file path or glob pattern, got {entry!r}")
        pattern = Path(entry).expanduser()
        pattern = pattern if pattern.is_absolute() else folder / pattern
        if glob.has_magic(str(pattern)):
            paths = sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
            if not paths:
                raise where(f"{fieldname}[{i}]", f"the pattern {entry!r} matches no file (in {folder})")
        elif pattern.is_dir():
            raise where(f"{fieldname}[{i}]", f"{pattern} is a folder; list its files or a glob such as '{entry}/*.npz'")
        elif not pattern.is_file():
            raise where(f"{fieldname}[{i}]", f"{pattern}: no such file")
        else:
            paths = [pattern]
        for p in paths:
            kind = _kind_of(p)
            if kind is None:
                raise where(f"{fieldname}[{i}]", f"{p}: not a stimulus this reads (media "
                                                 f"{'/'.join(MEDIA_SUFFIXES)}, events {'/'.join(EVENTS_SUFFIXES)}, "
                                                 "features .npz)")
            out.append(Stimulus(p.resolve(), kind))
    seen = set()
    for s in out:
        if s.path in seen:
            raise where(fieldname, f"{s.path} is listed twice; each stimulus counts once")
        seen.add(s.path)
    return out


def _conditions(doc, folder, where) -> dict:
    conditions = doc.get("conditions")
    if not isinstance(conditions, dict) or not conditions:
        raise where("conditions", f"expected a mapping of condition name -> list of stimuli, got {conditions!r}")
    out = {}
    for name, entries in conditions.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise where(f"conditions.{name}", "a condition name is a Python identifier (letters, digits, _), so "
                                              "that contrasts can name it")
        out[name] = _stimuli(entries, folder, where, f"conditions.{name}")
    return out


def _contrasts(doc, conditions, where) -> dict:
    contrasts = doc.get("contrasts")
    if not isinstance(contrasts, dict) or not contrasts:
        raise where("contrasts", f"expected a mapping of contrast name -> expression such as 'a - b', got {contrasts!r}")
    out = {}
    for name, expression in contrasts.items():
        fieldname = f"contrasts.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise where(fieldname, "a contrast name names its output folder: letters, digits, _ . - only")
        weights = parse_contrast(expression, conditions, where, fieldname)
        _check_disjoint(weights, conditions, where, fieldname)
        out[name] = Contrast(name, str(expression).strip(), weights)
    return out


def _check_disjoint(weights, conditions, where, fieldname: str) -> None:
    """A stimulus in two conditions one contrast compares would be on both sides of its test."""
    owner: dict[Path, str] = {}
    for c in weights:
        for s in conditions[c]:
            if s.path in owner:
                raise where(fieldname, f"{s.path} is in both conditions {owner[s.path]!r} and {c!r}, which this "
                                       "contrast compares; a stimulus belongs to one side")
            owner[s.path] = c


def _window(doc, where):
    """None (whole stimulus) or (start, end) seconds of response after onset; warnings as a list of lines."""
    window = doc.get("window", "whole")
    if window in (None, "whole"):
        return None, []
    if not isinstance(window, dict) or set(window) != {"start", "end"}:
        raise where("window", f"expected 'whole' or {{start: s, end: s}} (seconds after onset), got {window!r}")
    start, end = window["start"], window["end"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (start, end)):
        raise where("window", f"start and end: expected numbers of seconds, got {window!r}")
    if not 0 <= start < end:
        raise where("window", f"expected 0 <= start < end, got start={start}, end={end}")
    if end <= HEMODYNAMIC_OFFSET_S:
        raise where("window", f"ends at {end:g} s, before the {HEMODYNAMIC_OFFSET_S:g} s hemodynamic offset: the "
                              "response to a stimulus starts 5 s after it, so this window holds none; end it later")
    notes = []
    if start < HEMODYNAMIC_OFFSET_S:
        notes.append(f"{where.source}: field 'window': starts at {start:g} s, before the {HEMODYNAMIC_OFFSET_S:g} s "
                     f"hemodynamic offset: only its part from {HEMODYNAMIC_OFFSET_S:g} s holds response")
    return (float(start), float(end)), notes


def _scalar(doc, key, kind, default, where, check, expected: str):
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind) or not check(value):
        raise where(key, f"expected {expected}, got {value!r}")
    return value


def _subject(doc, where):
    subject = doc.get("subject", "average")
    if isinstance(subject, bool) or not isinstance(subject, (int, str)) or (isinstance(subject, int) and subject < 0):
        raise where("subject", f"expected 'average', 'all', a training-subject name or index, got {subject!r}")
    return subject


def plan_experiment(path, model=None) -> Design:
    """The checked design of the experiment file ``path`` (module docstring); ``model`` (an ``NForgeModel``)
    adds the checks against the checkpoint. DesignError (one line: file, field, what) on any problem."""
    import yaml

    path = Path(path)
    where = _Where(path)
    if not path.is_file():
        raise DesignError(f"{path}: no such experiment file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DesignError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(doc, dict):
        raise DesignError(f"{path}: expected a mapping with fields conditions and contrasts, got {type(doc).__name__}")
    unknown = sorted(set(map(str, doc)) - set(FIELDS))
    if unknown:
        raise where(unknown[0], f"unknown field; expected some of {list(FIELDS)}")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise where("name", f"expected a non-empty string, got {name!r}")
    window, notes = _window(doc, where)
    design = Design(
        name=name, subject=_subject(doc, where), window=window, source=path.resolve(), warnings=notes,
        response=_scalar(doc, "response", str, "mean", where, lambda v: v in SUMMARIES, f"one of {list(SUMMARIES)}"),
        n_permutations=_scalar(doc, "n_permutations", int, 1000, where, lambda v: v >= 1, "a positive integer"),
        alpha=float(_scalar(doc, "alpha", (int, float), 0.05, where, lambda v: 0 < v < 1, "a number in (0, 1)")),
        seed=_scalar(doc, "seed", int, 0, where, lambda v: True, "an integer"),
        conditions={}, contrasts={})
    design.conditions = _conditions(doc, path.parent, where)
    design.contrasts = _contrasts(doc, design.conditions, where)
    for cname, contrast in design.contrasts.items():
        if design.response == "std" and contrast.test == "sign-flip":
            raise where(f"contrasts.{cname}", "a response strength (response: std) is never below zero, so a "
                                              "condition against baseline is significant everywhere; compare two "
                                              "conditions (a difference) instead")
        try:
            check_power({c: len(v) for c, v in design.conditions.items()}, contrast.weights, alpha=design.alpha,
                        n_permutations=design.n_permutations, name=cname)
        except DesignError as e:
            raise where(f"contrasts.{cname}", str(e)) from None
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if model is not None:
        check_against_model(design, model)
    return design


def heads(design: Design, model) -> list[tuple[str, int | None]]:
    """[(label, subject id)] the design predicts with: one head, or every training subject's for "all"."""
    from nforge_jax.inference.checks import resolve_subject
    from nforge_jax.inference.provenance import subject_label

    where = _Where(design.source or design.name)
    if design.subject == "all":
        n = int(model.config.n_subjects)
        if n < 1:
            raise where("subject", "'all' needs a model with training subjects; this one has none")
        return [(subject_label(model, i), i) for i in range(n)]
    try:
        sid = resolve_subject(model, design.subject)
    except ValueError as e:
        raise where("subject", str(e)) from None
    return [(subject_label(model, sid), sid)]


def check_against_model(design: Design, model) -> None:
    """The design's subject and stimuli against the checkpoint: feature files of the model's modalities,
    shapes, rate, recipe and output space; events tables with something the model reads."""
    heads(design, model)
    where = _Where(design.source or design.name)
    for cname, stims in design.conditions.items():
        for s in stims:
            fieldname = f"conditions.{cname}"
            if s.kind == "features":
                n_rows = -(-_check_feature_file(s.path, model, where, fieldname) // 2)  # 2 Hz rows -> 1 s TRs
                if not design.window_rows(np.arange(n_rows)).any():
                    raise where("window", f"{s.path} is {n_rows} s long; the window {design.window} reads rows "
                                          f"of stimulus seconds {design.window[0] - HEMODYNAMIC_OFFSET_S:g} to "
                                          f"{design.window[1] - HEMODYNAMIC_OFFSET_S:g}, none of them")
            elif s.kind == "events":
                _check_events_file(s.path, model, where, fieldname)


def read_feature_stimulus(path) -> tuple[dict, dict]:
    """({modality: (T, n_layers, dim) float32}, meta) of a feature file (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z[META_KEY])) if META_KEY in z.files else {}
        feats = {k: np.asarray(z[k], np.float32) for k in z.files if k != META_KEY}
    return feats, meta


def _check_feature_file(path: Path, model, where, fieldname: str) -> int:
    """The file's number of 2 Hz rows, after checking it against the model."""
    from nforge_jax.inference.provenance import model_feature_hz

    try:
        feats, meta = read_feature_stimulus(path)
    except (OSError, ValueError) as e:
        raise where(fieldname, f"{path}: not a readable .npz of feature arrays ({e})") from None
    config = model.config
    dims = {m: (n, d) for m, n, d in config.feature_dims}
    other = sorted(set(feats) - set(dims))
    if other or not feats:
        raise where(fieldname, f"{path}: holds arrays {sorted(feats)}; expected one per modality of the model "
                               f"({sorted(dims)}) and optionally {META_KEY!r}")
    lengths = set()
    for m, x in feats.items():
        if x.ndim != 3 or tuple(x.shape[1:]) != dims[m]:
            raise where(fieldname, f"{path}: {m} has shape {x.shape}, the model takes (T, {dims[m][0]}, {dims[m][1]}) "
                                   "(another extraction recipe?)")
        lengths.add(x.shape[0])
    if len(lengths) != 1 or min(lengths) < 1:
        raise where(fieldname, f"{path}: the modalities cover different numbers of 2 Hz rows {sorted(lengths)}")
    recorded = {"extract_recipe": model.metadata.get("extract_recipe"), "feature_hz": model_feature_hz(config),
                "space": model.output_space.to_dict()}
    for key, ours in recorded.items():
        if key in meta and json.dumps(meta[key], sort_keys=True) != json.dumps(ours, sort_keys=True):
            what = {"extract_recipe": "extraction recipe", "feature_hz": "feature rate", "space": "output space"}[key]
            raise where(fieldname, f"{path}: made for another {what} than the checkpoint's ({key} "
                                   f"{_brief(meta[key])} there, {_brief(ours)} in the checkpoint)")
    return lengths.pop()


def _brief(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def read_events_file(path: Path):
    import pandas as pd

    from nforge_jax.data.events import validate_events

    suffix = path.suffix.lower()
    table = (pd.read_parquet(path) if suffix == ".parquet"
             else pd.read_csv(path, sep="\t" if suffix == ".tsv" else ","))
    return validate_events(table, source=str(path))


def _check_events_file(path: Path, model, where, fieldname: str) -> None:
    try:
        events = read_events_file(path)
    except (OSError, ValueError) as e:
        raise where(fieldname, f"{' '.join(str(e).split())}") from None
    timelines = sorted(set(events["timeline"]))
    if len(timelines) != 1:
        raise where(fieldname, f"{path}: holds timelines {timelines}; an events file is one stimulus (one timeline)")
    reads = {"Word": "text", "Audio": "audio", "Video": "video"}
    types = sorted(set(events["type"]))
    if not any(reads.get(t) in model.config.modalities for t in types):
        raise where(fieldname, f"{path}: nothing the model reads: {'/'.join(types)} events, the model takes "
                               f"{', '.join(model.config.modalities)}")


def write_feature_stimulus(path, features: Mapping[str, np.ndarray], model=None) -> Path:
    """A feature stimulus file (atomic): {modality: (T, n_layers, dim)} at 2 Hz, and with ``model`` the
    recipe, rate and output space it is made for, which :func:`plan_experiment` checks."""
    from nforge_jax.data.store import atomic_open

    arrays = {str(m): np.asarray(x, np.float32) for m, x in features.items()}
    if model is not None:
        from nforge_jax.inference.provenance import model_feature_hz

        meta = {"extract_recipe": model.metadata.get("extract_recipe"), "feature_hz": model_feature_hz(model.config),
                "space": model.output_space.to_dict()}
        arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return path
