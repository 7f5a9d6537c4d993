"""Batched prediction over every timeline of a FeatureStore (``nforge predict``).

Each timeline's features (row k = timeline time [k/2, (k+1)/2)) are read from row round(2 * start_s)
and cut into consecutive windows of ``window_steps`` rows (the last zero-padded), exactly as
``NForgeModel.predict_features`` does; output row i is the 1 s TR starting at start_s + i, and a timeline
gives ceil(n_rows * n_output_timesteps / window_steps) rows. A modality a timeline lacks is absent
(exact zeros); windows are batched with other timelines that have the same modalities.

Throughput: windows of many timelines fill fixed-size batches (one compiled shape), sharded over the
local devices along the batch axis (the parameters replicated by ``model.sharding`` rules); a reader thread
reads and transfers the next batches to the devices while the current one computes, and the previous
batch's output is copied back while the next one runs.

Several machines or GPUs: run one independent process per device with ``shard=(i, n)`` (``nforge predict
--shard i/n``, or read from SLURM_PROCID/SLURM_NTASKS); process i takes every n-th timeline. The processes
share nothing but the output directory, so one that finishes early or dies never stops the others (a
coordinated jax.distributed job would: its exit barrier times out when the others run minutes longer).
Inside an already initialised jax.distributed program the default shard is (process_index, process_count).

Output directory::

    OUT/nforge_predictions.json         marker: format, n_outputs, tr_s, store, and what made the predictions
                                        (`inference.provenance.made_by`: model_sha256, subject name, the store
                                        subjects its head was fitted on, feature_hz, extract_recipe, space,
                                        allowed overrides)
    OUT/<timeline dir>.npy              (n_rows, n_vertices) float32
    OUT/<timeline dir>.json             {"name", "file", "shape", "start_s", "tr_s", "sha256", the same made_by
                                         fields, "identity": {study, subject, stimulus, repeat},
                                         "inputs": {start_s, feature_hz, features_sha256, extractors, ...}}

A timeline is finished when its .json exists (written atomically after its .npy). A re-run skips
finished timelines and recomputes the others (a killed run continues where it stopped), but only when they
were made the same way: ``model_sha256`` (sha256 of the model's config, subject names and parameter
bytes), the subject and the timeline's store inputs must match this run, else the run is refused
(``PredictionsMismatch``, naming the field) unless ``overwrite``. The marker is written only after every
input check has passed, so a refused run leaves nothing behind. Shards of one directory: whichever runs
first creates the marker (exclusively: two shards starting together cannot both write it); every other shard
must have been made the same way, else it is refused before it writes anything.

Pairings (`inference.provenance`): a timeline whose features are not at the model's rate (meta ``feature_hz``)
is refused; a subject's head on a run recorded from another subject is refused unless ``allow_other_subject``;
features of another extraction recipe unless ``allow_other_recipe``. Either flag is recorded in the marker and
every record (``allowed``), and the report's ``notes`` say which timelines it let through.

Output space: the model's (``NForgeModel.output_space``) must be the store's (the timelines' ``meta["space"]``,
else what their fMRI columns imply; `data.spaces`), else SpaceMismatch naming both; the marker records it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.data.provenance import check_store_recipe
from nforge_jax.data.shards import check_shard, shard_names
from nforge_jax.data.spaces import check_same_space
from nforge_jax.data.store import FeatureStore, atomic_open, timeline_dirname
from nforge_jax.data.timebase import FEATURE_HZ, n_windows, output_rows
from nforge_jax.inference import provenance
from nforge_jax.inference.checks import check_batch_size, check_finite, feature_start_row, resolve_subject
from nforge_jax.model.sharding import batch_sharding, make_mesh, shard_state

__all__ = ["predict_store", "read_predictions", "finished_timelines", "read_marker", "model_fingerprint",
           "timeline_inputs", "PredictionsMismatch"]

FORMAT_NAME = "nforge_jax.Predictions"
MARKER = "nforge_predictions.json"
# The marker's fields that say what made the predictions (the rest says how they are laid out).
_MADE_BY_FIELDS = ("provenance", "model_sha256", "subject", "subject_index", "subject_keys", "feature_hz",
                   "extract_recipe", "space", "allowed")


def _atomic_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def _atomic_npy(path: Path, array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    with atomic_open(path) as f:
        np.lib.format.write_array(f, array, allow_pickle=False)
    return hashlib.sha256(array.tobytes()).hexdigest()


def _json(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


class PredictionsMismatch(provenance.ProvenanceMismatch):
    """An output directory holds predictions made differently (another model, subject or inputs)."""


def model_fingerprint(model) -> str:
    """sha256 of the model's configuration, training-subject names and parameter bytes (cached by the model)."""
    return model.fingerprint()


def timeline_inputs(store: FeatureStore, name: str, config) -> dict:
    """What a timeline's predictions are made from: its start, the checksums of the features the model reads,
    and the extractor settings the store records for them."""
    manifest = store.manifest(name)
    mods = sorted(m for m in store.modalities(name) if m in config.modalities)
    extractors = manifest["meta"].get("extractors") or {}
    return {"start_s": manifest["meta"].get("start_s", 0.0),
            "feature_hz": manifest["meta"].get("feature_hz", FEATURE_HZ),
            "features_sha256": {m: manifest["arrays"][f"features/{m}"]["sha256"] for m in mods},
            "extractors": {m: extractors.get(m) for m in mods},
            "extract_signature": manifest["meta"].get("extract_signature")}


def _refuse_if_different(path: Path, old: dict, new: dict) -> None:
    """PredictionsMismatch naming the first field of ``new`` that ``old`` (a marker or record) has otherwise."""
    for field, value in new.items():
        was = old.get(field)
        if _json(was) == _json(value):
            continue
        if field == "inputs" and isinstance(was, dict):
            sub = next((k for k in value if _json(was.get(k)) != _json(value[k])), None)
            if sub is not None:
                field, was, value = f"inputs.{sub}", was.get(sub), value[sub]
        what = {"model_sha256": "a different checkpoint (weights or metadata)", "subject": "another subject",
                "subject_index": "another subject", "subject_keys": "another subject",
                "n_outputs": "another number of outputs", "space": "another output space",
                "feature_hz": "another feature rate", "extract_recipe": "a model of another extraction recipe",
                "allowed": "other overrides (--allow-*)", "provenance": "another provenance format"}.get(
            field, f"other store inputs ({field})")
        shown = (lambda v: f"{v[:12]}..." if isinstance(v, str) and len(v) > 16 else repr(v))
        raise PredictionsMismatch(
            f"{path}: these predictions were made by {what}: {field} is {shown(was)} there, {shown(value)} in this "
            f"run; use another --out directory, or --overwrite (overwrite=True) to recompute them")


def read_marker(out) -> dict | None:
    """The directory's nforge_predictions.json, or None; ValueError naming the file if it is damaged."""
    path = Path(out) / MARKER
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable or not JSON ({type(e).__name__}: {e}); expected the marker "
                         "nforge predict writes (remove the file, or rerun with --overwrite)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: field 'format' is {doc.get('format') if isinstance(doc, dict) else doc!r}, "
                         f"expected {FORMAT_NAME!r} (remove the file, or rerun with --overwrite)")
    return doc


def finished_timelines(out, *, strict: bool = False) -> dict[str, dict]:
    """{timeline name: its record} of the finished timelines in an output directory. An unreadable record is
    skipped (predict recomputes that timeline), or with ``strict`` (readers: evaluate, view) refused naming it:
    leaving it out would score the directory's other timelines without a word."""
    out = Path(out)
    done = {}
    if not out.is_dir():
        return done
    for p in out.glob("*.json"):
        if p.name == MARKER or p.name.startswith("."):
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            if strict:
                raise ValueError(f"prediction record {p}: unreadable ({type(e).__name__}: {e}); re-run nforge predict "
                                 "into this directory to redo that timeline") from None
            continue  # unreadable record: recomputed
        if not isinstance(rec, dict) or "name" not in rec:
            if strict:
                raise ValueError(f"prediction record {p}: expected an object with fields 'name' and 'file'")
            continue
        if provenance.confined_file(out, rec.get("file"), f"prediction record {p}").is_file():
            done[rec["name"]] = rec
    return done


def read_predictions(out, name: str, record: dict | None = None) -> np.ndarray:
    """(n_rows, n_vertices) predictions of one timeline, checked against its record (shape and sha256: a file
    replaced or cut after it was written is refused, naming it)."""
    rec = finished_timelines(out, strict=True).get(name) if record is None else record
    if rec is None:
        raise KeyError(f"{out}: no finished predictions for timeline {name!r}")
    path = provenance.confined_file(Path(out), rec["file"], f"prediction record of {name!r}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable predictions ({type(e).__name__}: {e}); re-run nforge predict") from None
    if list(array.shape) != list(rec.get("shape", [])) or \
            hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != rec.get("sha256"):
        raise ValueError(f"{path}: shape {tuple(array.shape)} / checksum differ from its record (shape "
                         f"{tuple(rec.get('shape', []))}): the file was changed after nforge predict wrote it; "
                         "re-run nforge predict with --overwrite")
    return array


class _Plan:
    """Window table of the timelines to do: per timeline its present modalities, first row and rows."""

    def __init__(self, store: FeatureStore, names: Sequence[str], config):
        self.config = config
        self.window = int(config.window_steps)
        self.per_window = int(config.n_output_timesteps)
        dims = {m: (n, d) for m, n, d in config.feature_dims}
        self.timelines = []
        for name in names:
            meta = store.meta(name)
            mods = sorted(m for m in store.modalities(name) if m in dims)
            if not mods:
                raise ValueError(f"timeline {name!r}: none of the model's modalities {list(dims)} in the store "
                                 f"(it has {store.modalities(name)})")
            arrays = {m: store.features(name, m) for m in mods}
            for m, a in arrays.items():
                if tuple(a.shape[1:]) != dims[m]:
                    raise ValueError(f"timeline {name!r} features[{m!r}]: (layers, dim) {tuple(a.shape[1:])}, "
                                     f"the model takes {dims[m]}")
            start_s = meta.get("start_s", 0.0)
            r0 = feature_start_row(start_s, f"timeline {name!r} (meta start_s)")
            start_s = float(start_s)
            n_steps = max(a.shape[0] for a in arrays.values()) - r0
            if n_steps <= 0:
                raise ValueError(f"timeline {name!r}: start_s {start_s} is past the end of its features")
            n_win = n_windows(n_steps, self.window)
            n_rows = output_rows(n_steps, self.window, self.per_window)
            self.timelines.append({"name": name, "mods": tuple(mods), "r0": r0, "n_win": n_win, "n_rows": n_rows,
                                   "start_s": start_s, "arrays": arrays})
        self.dims = dims

    def batches(self, batch_size: int):
        """Yields (modalities, [(timeline index, window index) or None for padding]) in timeline order,
        each batch holding windows of one modality set."""
        groups: dict[tuple, list] = {}
        for i, t in enumerate(self.timelines):
            groups.setdefault(t["mods"], []).extend((i, k) for k in range(t["n_win"]))
        for mods, windows in groups.items():
            for lo in range(0, len(windows), batch_size):
                part = windows[lo: lo + batch_size]
                yield mods, part + [None] * (batch_size - len(part))

    def load(self, mods, slots) -> dict[str, np.ndarray]:
        out = {m: np.zeros((len(slots), self.window, *self.dims[m]), np.float32) for m in mods}
        for row, slot in enumerate(slots):
            if slot is None:
                continue
            t = self.timelines[slot[0]]
            lo = t["r0"] + slot[1] * self.window
            for m in mods:
                a = t["arrays"][m]
                part = a[lo: min(lo + self.window, a.shape[0])]
                check_finite(part, f"timeline {t['name']!r} features[{m!r}]", row_offset=lo)
                out[m][row, : len(part)] = part
        return out


def predict_store(model, store, out, *, subject=None, batch_size: int | None = None,
                  timelines: Sequence[str] | None = None, devices=None, overwrite: bool = False,
                  progress: bool = True, prefetch: int = 2, shard: tuple[int, int] | None = None,
                  on_timeline_done: Callable[[str, Path], None] | None = None, allow_other_subject: bool = False,
                  allow_other_recipe: bool = False) -> dict:
    """Predict every (or the given) timeline of ``store`` into the directory ``out``; see the module docstring.

    model: an ``NForgeModel``. subject: None (average subject), an index or a training-subject name.
    batch_size: windows per step (default ``model.batch_size``), rounded up to a multiple of the devices.
    shard: (i, n) -> only every n-th timeline from the i-th (default: this JAX process's index and count).
    allow_other_subject / allow_other_recipe: deliberate pairings, recorded (module docstring).
    Returns {"written": [...], "skipped": [...], "hours": stimulus hours predicted, "seconds": wall time,
    "made_by": the provenance record, "notes": what the overrides let through}.
    """
    t_start = time.time()
    index, count = check_shard(shard) or (jax.process_index(), jax.process_count())
    subject_id = resolve_subject(model, subject)
    bs = check_batch_size(batch_size) or check_batch_size(getattr(model, "batch_size", 8), "model.batch_size")
    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    out = Path(out)
    allowed = [name for name, on in (("other_subject", allow_other_subject), ("other_recipe", allow_other_recipe))
               if on]
    made_by = provenance.made_by(model, subject_id, allowed=allowed)
    names = provenance.check_unique(shard_names(store.timelines if timelines is None else timelines,
                                                (index, count)), "timelines")
    missing = [n for n in names if n not in store]
    if missing:
        raise ValueError(f"timelines: {missing[0]!r} is not in the store {store.path}")
    space = model.output_space
    store_space = store.output_space(names)
    if store_space is not None:  # a features-only store that names no space is the model's to fill
        named = next(n for n in names if store.timeline_space(n) is not None)
        check_same_space(space, store_space, expected_what="the model",
                         got_what=f"timeline {named!r} of the store {store.path}")
    notes = _check_pairings(model, store, names, made_by, allow_other_subject, allow_other_recipe)
    skipped, todo = _check_out_dir(model, store, out, names, made_by, overwrite)
    plan = _Plan(store, todo, model.config)  # checks shapes and start times before anything is written
    # Only a run that passed every check marks the directory (a refused run leaves nothing behind).
    out.mkdir(parents=True, exist_ok=True)
    marker = {"format": FORMAT_NAME, "version": 3, "n_outputs": int(model.config.n_outputs), "tr_s": 1.0,
              "n_output_timesteps": int(model.config.n_output_timesteps), "store": str(store.path), **made_by}
    _claim_marker(out, marker, overwrite)
    _remove_stale_temporaries(out)
    report = {"written": [], "skipped": skipped, "hours": 0.0, "seconds": 0.0, "made_by": made_by, "notes": notes}
    if todo:
        writer = _Writer(plan, store, out, made_by, report, t_start, progress, on_timeline_done)
        try:
            _run_batches(model.predictor, plan, subject_id, bs, devices, prefetch, writer.collect)
        finally:
            writer.close()
    report["seconds"] = time.time() - t_start
    return report


def _check_pairings(model, store, names, made_by: dict, allow_other_subject: bool,
                    allow_other_recipe: bool) -> list[str]:
    """Every timeline against what makes its predictions (rate, subject, recipe); the notes of allowed pairings."""
    notes = []
    for name in names:
        provenance.check_feature_rate(store, name, made_by["feature_hz"])
        note = provenance.check_subject(made_by, store, name, allow_other_subject=allow_other_subject,
                                        where="nforge predict")
        if note:
            notes.append(note)
    # features made by another recipe than the model's would give plausible but wrong maps
    notes += check_store_recipe(store, names, model.metadata.get("extract_recipe"), allow=allow_other_recipe)
    return notes


def _check_out_dir(model, store, out: Path, names, made_by: dict, overwrite: bool):
    """(skipped, todo) timeline names; PredictionsMismatch when ``out`` holds predictions made otherwise."""
    if overwrite:
        return [], list(names)
    old = read_marker(out)
    if old is not None:
        _check_marker(out / MARKER, old, made_by, int(model.config.n_outputs))
    done = finished_timelines(out)
    for name in [n for n in names if n in done]:
        _refuse_if_different(out / f"{timeline_dirname(name)}.json", done[name],
                             {**made_by, "inputs": timeline_inputs(store, name, model.config)})
    return [n for n in names if n in done], [n for n in names if n not in done]


def _check_marker(path: Path, old: dict, made_by: dict, n_outputs: int) -> None:
    if "provenance" not in old:
        raise PredictionsMismatch(f"{path}: written by an older nforge predict that recorded no provenance (subject "
                                  "name, feature rate, recipe); use another --out directory, or --overwrite "
                                  "(overwrite=True) to predict again")
    _refuse_if_different(path, old, {**made_by, "n_outputs": n_outputs})


def _claim_marker(out: Path, marker: dict, overwrite: bool) -> None:
    """Write the directory's marker, or check the one a shard that started first wrote: created exclusively
    (a hard link of a complete temporary file), so two shards starting together cannot both write theirs."""
    path = out / MARKER
    if overwrite:
        _atomic_bytes(path, _json(marker))
        return
    tmp = out / f".{MARKER}.claim-{os.getpid()}-{threading.get_ident()}"
    tmp.write_bytes(_json(marker))
    try:
        os.link(tmp, path)
    except FileExistsError:
        _check_marker(path, read_marker(out), {k: marker[k] for k in marker if k in _MADE_BY_FIELDS},
                      marker["n_outputs"])
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path) -> None:
    for p in out.glob(".*.tmp-*"):  # leftovers of a killed write; a recent one may be another shard's, in flight
        try:
            if time.time() - p.stat().st_mtime > 3600:
                p.unlink()
        except FileNotFoundError:
            pass


class _Writer:
    """Collects batch outputs per timeline and writes each timeline (.npy, then its .json) once complete."""

    def __init__(self, plan: _Plan, store, out: Path, made_by: dict, report: dict, t_start: float, progress: bool,
                 on_timeline_done):
        self.plan, self.store, self.out, self.made_by, self.report = plan, store, out, made_by, report
        self.t_start, self.on_timeline_done = t_start, on_timeline_done
        self.pending = {i: t["n_win"] for i, t in enumerate(plan.timelines)}
        self.results: dict[int, np.ndarray] = {}
        self.bar = _progress_bar(sum(t["n_rows"] for t in plan.timelines)) if progress else None

    def collect(self, slots, y) -> None:
        y = np.asarray(y)  # waits for the device; (B, per_window, V)
        per_window = self.plan.per_window
        for row, slot in enumerate(slots):
            if slot is None:
                continue
            i, k = slot
            if i not in self.results:
                t = self.plan.timelines[i]
                self.results[i] = np.empty((t["n_win"] * per_window, y.shape[-1]), np.float32)
            self.results[i][k * per_window: (k + 1) * per_window] = y[row]
            self.pending[i] -= 1
            if self.pending[i] == 0:
                self.finish(i)

    def finish(self, i: int) -> None:
        t = self.plan.timelines[i]
        preds = self.results.pop(i)[: t["n_rows"]]
        stem = timeline_dirname(t["name"])
        sha = _atomic_npy(self.out / f"{stem}.npy", preds)
        rec = {"name": t["name"], "file": f"{stem}.npy", "shape": list(preds.shape), "start_s": t["start_s"],
               "tr_s": 1.0, "sha256": sha, **self.made_by,
               "identity": provenance.timeline_identity(self.store, t["name"]),
               "inputs": timeline_inputs(self.store, t["name"], self.plan.config)}
        _atomic_bytes(self.out / f"{stem}.json", _json(rec))
        self.report["written"].append(t["name"])
        self.report["hours"] += t["n_rows"] / 3600.0
        if self.bar is not None:
            self.bar.update(t["n_rows"])
            minutes = (time.time() - self.t_start) / 60.0
            self.bar.set_postfix_str(f"{self.report['hours'] / max(minutes, 1e-9):.2f} h/min")
        if self.on_timeline_done is not None:
            self.on_timeline_done(t["name"], self.out / f"{stem}.npy")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(total_rows: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # Counted in whole output rows (1 s each; integers, so the count ends exactly at the total) and shown in hours.
    return tqdm(total=total_rows, unit="h", unit_scale=1 / 3600.0, desc="predict", bar_format=(
        "{l_bar}{bar}| {n:.3f}/{total:.3f} h of stimulus [{elapsed}<{remaining}{postfix}]"))


def _run_batches(core, plan: _Plan, subject_id, bs: int, devices, prefetch: int, collect) -> None:
    """Every window of ``plan`` through ``core``'s compiled forward, data-parallel over ``devices``: a reader
    thread reads and transfers the next batches while the current one computes, and each batch's output is
    copied back (``collect(slots, y)``) while the next one runs."""
    devices = list(devices if devices is not None else jax.local_devices())
    mesh = make_mesh(data=len(devices), model=1, devices=devices)
    bs = -(-bs // len(devices)) * len(devices)
    state = shard_state(core.state, mesh)
    feat_sharding = batch_sharding(mesh, 4)
    ids = None if subject_id is None else jax.device_put(jnp.full((bs,), subject_id, jnp.int32),
                                                         batch_sharding(mesh, 1))
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    end = object()

    def reader():
        try:
            for mods, slots in plan.batches(bs):
                if stop.is_set():
                    return
                host = plan.load(mods, slots)
                q.put((slots, {m: jax.device_put(v, feat_sharding) for m, v in host.items()}))
            q.put(end)
        except BaseException as exc:  # surfaced in the main thread
            q.put(exc)

    thread = threading.Thread(target=reader, name="nforge-predict-reader", daemon=True)
    thread.start()
    in_flight = None
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            slots, batch = item
            y = core.forward(batch, ids, state=state)  # asynchronous dispatch
            if in_flight is not None:
                collect(*in_flight)  # previous output copied back while this batch runs
            in_flight = (slots, y)
        if in_flight is not None:
            collect(*in_flight)
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
