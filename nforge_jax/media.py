"""From media files to brain maps in one call (``nforge predict --media``, ``NForgeModel.predict_media``).

Inputs are files or folders (not recursive) of video (.mp4 ...), audio (.wav ...), text (.txt) and word timings
(.TextGrid). A TextGrid beside a media file of the same stem times that file's words (no speech recognition);
alone it is a text stimulus of its own. Each input file is one timeline, named by its file name.

Stages, each resumable and each with a progress bar:

1. events (`inference.stimulus`), cached per file in ``OUT/events/`` (speech recognition runs once);
2. extraction with the checkpoint's recipe (``model.extract_config``) into the FeatureStore ``OUT/store``;
3. prediction (`inference.batch.predict_store`) into ``OUT/predictions`` (``nforge view`` / ``evaluate`` read it);
4. per input, in ``OUT/maps/<file name>/``: ``viewer.html`` (`viz.view`), ``mean_activity.png``,
   ``variance_shares.png`` (each modality's share of the variance of the prediction over time,
   `inference.attribution.store_variance_shares` without fMRI), ``maps.npz`` and ``summary.json``, written last.

Every file is probed, every model resolved and every event built before anything is written under ``OUT``:
a missing model, an unreadable file or one without a stream the model can use is refused (ValueError /
OSError naming the file) with nothing left behind. A rerun redoes nothing that is finished; ``shard=(I, N)``
takes every N-th input, as ``nforge extract`` / ``nforge predict`` do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nforge_jax.data.events import make_events, validate_events
from nforge_jax.data.shards import check_shard, shard_names
from nforge_jax.data.store import atomic_open
from nforge_jax.data.studies.probe import MediaError, probe_audio, probe_video
from nforge_jax.inference.stimulus import (AUDIO_SUFFIXES, DEFAULT_ASR_MODEL, DEFAULT_WORDS_PER_SECOND,
                                           TEXT_SUFFIXES, VIDEO_SUFFIXES, add_context, get_events_dataframe,
                                           read_word_timings, remove_missing)

__all__ = ["MediaInput", "collect_inputs", "predict_media", "summary_line", "MEDIA_SUFFIXES"]

TIMING_SUFFIXES = (".textgrid",)
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES + TEXT_SUFFIXES + TIMING_SUFFIXES
READS = {"Word": "text", "Audio": "audio", "Video": "video"}  # event type -> the modality extracted from it


@dataclasses.dataclass(frozen=True)
class MediaInput:
    """One stimulus: ``path`` (video, audio, text, or a TextGrid alone), its word timings, its timeline name."""

    path: Path
    kind: str  # "video" | "audio" | "text" | "timings"
    word_timings: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    for kind, suffixes in (("video", VIDEO_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("text", TEXT_SUFFIXES),
                           ("timings", TIMING_SUFFIXES)):
        if suffix in suffixes:
            return kind
    return None


def collect_inputs(paths: Sequence) -> list[MediaInput]:
    """The stimuli of files and folders (sorted within a folder), TextGrids paired with their media by stem."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _kind(f) is not None)
            if not found:
                raise ValueError(f"{p}: no media file in the folder (expected {', '.join(MEDIA_SUFFIXES)})")
            files.extend(found)
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such file or directory")
        elif _kind(p) is None:
            raise ValueError(f"{p}: not a media file this reads (expected {', '.join(MEDIA_SUFFIXES)})")
        else:
            files.append(p)
    files = list(dict.fromkeys(f.absolute() for f in files))
    stems = {(f.parent, f.stem.lower()) for f in files if _kind(f) != "timings"}
    timings = {(f.parent, f.stem.lower()): f for f in files if _kind(f) == "timings"}
    inputs = [MediaInput(f, _kind(f), timings.get((f.parent, f.stem.lower())))
              for f in files if _kind(f) != "timings" or (f.parent, f.stem.lower()) not in stems]
    seen: dict[str, Path] = {}
    for item in inputs:
        if item.name in seen:
            raise ValueError(f"{item.path}: another input has the same file name ({seen[item.name]}); outputs are "
                             "named by file name, so rename one")
        seen[item.name] = item.path
    return inputs


def _probe(item: MediaInput):
    """The streams of a video/audio file (MediaError naming it when it has none this can use)."""
    if item.kind == "audio":
        return probe_audio(item.path)
    try:
        return probe_video(item.path)
    except MediaError as video_error:
        try:  # a container with sound only is an audio stimulus
            return probe_audio(item.path)
        except MediaError:
            raise MediaError(f"{item.path}: no video or audio stream it can use ({video_error})") from None


def _sound_only_events(item: MediaInput, info, words: list[dict], base: dict) -> pd.DataFrame:
    rows = [{**base, "type": "Audio", "start": 0.0, "duration": info.duration, "filepath": str(item.path),
             "offset": 0.0, "frequency": info.sample_rate}]
    rows += [{**base, "type": "Word", "start": float(w["start"]), "duration": float(w["duration"]),
              "text": str(w["text"]), "language": "english"} for w in words]
    events = make_events(rows, source=str(item.path))
    return remove_missing(add_context(events)) if words else events


def build_events(item: MediaInput, *, words_per_second: float, asr, asr_model: str) -> pd.DataFrame:
    """The events table of one stimulus (its timeline: the file name)."""
    base = {"timeline": item.name, "subject": "default"}
    if item.kind == "timings":
        words = read_word_timings(item.path)
        if not words:
            raise ValueError(f"{item.path}: no words in the word-timing file")
        rows = [{**base, "type": "Word", "start": w["start"], "duration": w["duration"], "text": w["text"],
                 "language": "english"} for w in words]
        return remove_missing(add_context(make_events(rows, source=str(item.path))))
    if item.kind == "text" and not item.path.read_text(encoding="utf-8", errors="replace").strip():
        raise ValueError(f"{item.path}: the text file has no words")
    info = _probe(item) if item.kind in ("video", "audio") else None
    if item.kind == "video" and not hasattr(info, "fps"):  # sound only
        words = read_word_timings(item.word_timings) if item.word_timings else []
        return _sound_only_events(item, info, words, base)
    key = {"video": "video_path", "audio": "audio_path", "text": "text_path"}[item.kind]
    return get_events_dataframe(**{key: item.path}, word_timings=item.word_timings, words_per_second=words_per_second,
                                asr=asr, asr_model=asr_model, timeline=item.name)


def _settings_used(item: MediaInput, settings: dict) -> dict:
    """The event settings a file's events depend on: the speaking rate for a text without timings, the speech
    recognition for sound without them (a callable ``asr`` is not recorded), none otherwise."""
    if item.word_timings is not None or item.kind == "timings":
        return {}
    if item.kind == "text":
        return {"words_per_second": settings["words_per_second"]}
    asr = settings["asr"]
    return {"asr": "callable" if callable(asr) else asr, "asr_model": settings["asr_model"]}


def _source_key(item: MediaInput, settings: dict) -> dict:
    """What a file's cached events depend on: the files (path, size, mtime) and the event settings."""
    def stat(p):
        st = p.stat()
        return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    return {"media": stat(item.path), "word_timings": stat(item.word_timings) if item.word_timings else None,
            **settings}


def _cached_events(path: Path, key: dict, item: MediaInput, overwrite: bool) -> pd.DataFrame | None:
    """The events an earlier run built from the same files and settings; None when there are none (or
    ``overwrite``). Another file or setting under the same name is refused: its features and predictions are
    in the output directory, and would be replaced only after the extraction."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        return None
    if doc.get("source") != key:
        if overwrite:
            return None
        changed = next((k for k in key if doc.get("source", {}).get(k) != key[k]), "source")
        raise ValueError(f"{item.path}: differs from the input of that name in {path.parent.parent} ({changed}: "
                         f"{_short(doc.get('source', {}).get(changed))} there, {_short(key.get(changed))} now); "
                         "use another --out, or --overwrite to redo it")
    return validate_events(pd.DataFrame(doc["events"]), source=str(path))


def _short(value) -> str:
    if isinstance(value, dict) and "path" in value:
        return f"{value['path']} of {value['size']} bytes"
    return repr(value)


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, default=str).encode()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(data)
    return path


def _recipe(model, progress: bool, device: str = "auto", dtype: str = "auto", batch_sizes: dict | None = None):
    """The checkpoint's extraction recipe (else the one its input shapes imply), restricted to the model's
    modalities, run on ``device`` in ``dtype`` with ``batch_sizes`` ({modality: clips / chunks per forward},
    the settings that change no feature)."""
    from nforge_jax.inference.segments import default_extract_config

    config = model.extract_config or default_extract_config(model.config)
    mods = tuple(m for m in config.modalities if m in model.config.modalities)
    if not mods:
        raise ValueError(f"the model takes {list(model.config.modalities)}, none of which its recipe extracts")
    return dataclasses.replace(config.with_batch_sizes(**(batch_sizes or {})), modalities=mods, progress=progress,
                               device=device, dtype=dtype)


def _check_models(inputs: Sequence[MediaInput], config) -> None:
    """Every extractor model the inputs need resolves locally (ModelNotAvailable naming it), before any compute."""
    from nforge_jax.extract.models import resolve_model

    needed = set()
    for item in inputs:
        needed |= {"video": {"video", "audio"}, "audio": {"audio"}, "text": {"text"}, "timings": {"text"}}[item.kind]
        needed |= {"text"} if item.word_timings else set()
    for m in config.modalities:
        if m in needed:
            resolve_model(getattr(config, m).model_id, m)


def _events(inputs, out: Path, config, settings: dict, overwrite: bool) -> tuple[pd.DataFrame, dict]:
    """(all events, {name: (cache path, key, events) to write}); ValueError naming a file the model reads nothing
    from. Cached events are reused when the files and settings are unchanged."""
    tables, to_cache = [], {}
    for item in inputs:
        key = _source_key(item, _settings_used(item, settings))
        cache = out / "events" / f"{item.name}.json"
        events = _cached_events(cache, key, item, overwrite) if cache.is_file() else None
        if events is None:
            events = build_events(item, words_per_second=settings["words_per_second"], asr=settings["asr"],
                                  asr_model=settings["asr_model"])
            to_cache[item.name] = (cache, key, events)
        types = sorted(set(events["type"]))
        if not any(READS.get(t) in config.modalities for t in types):
            raise ValueError(f"{item.path}: nothing the model reads: the file gives {'/'.join(types)} events, the "
                             f"model takes {', '.join(config.modalities)}")
        tables.append(events)
    return pd.concat(tables, ignore_index=True), to_cache


def _bar(iterable, desc: str, progress: bool, unit: str = "file"):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit)


def predict_media(model, paths, out, *, subject=None, batch_size: int | None = None, shard=None,
                  overwrite: bool = False, progress: bool = True, words_per_second: float = DEFAULT_WORDS_PER_SECOND,
                  asr=None, asr_model: str = DEFAULT_ASR_MODEL, figures: bool = True,
                  allow_other_subject: bool = False, allow_other_recipe: bool = False, device: str = "auto",
                  dtype: str = "auto", extract_batch_sizes: dict | None = None) -> dict:
    """Media files or folders -> predictions and maps under ``out`` (module docstring).

    model: an ``NForgeModel``. subject: None (the average subject), an index or a training-subject name.
    asr: None (``asr_model`` when available offline, else no words from speech), False, or a callable
    path -> [{"text", "start", "duration"}]. figures=False writes maps.npz and summary.json only.
    allow_other_subject / allow_other_recipe: as ``predict_store``'s (recorded in the provenance).
    device / dtype: where and in what the extractors run ("auto": a GPU in bfloat16 / float16 if there is one,
    else the CPU in float32). extract_batch_sizes: {"audio" / "video": chunks / clips per forward}.
    Returns {"files": [per-file summary], "extract": {"written", "skipped"}, "predict": predict_store's report,
    "maps": {"written", "skipped"}, "stage_seconds": {stage: s}, "made_by": the provenance record, "out",
    "seconds"}.
    """
    from nforge_jax.extract.run import extract_events
    from nforge_jax.inference.batch import predict_store

    t0, out = time.time(), Path(out)
    report = {"extract": {"written": [], "skipped": []}, "maps": {"written": [], "skipped": []}, "out": str(out),
              "files": [], "predict": {"written": [], "skipped": []}, "stage_seconds": {}}
    settings = {"words_per_second": float(words_per_second), "asr": asr, "asr_model": str(asr_model)}
    allowed = [name for name, on in (("other_subject", allow_other_subject), ("other_recipe", allow_other_recipe))
               if on]
    report["made_by"] = _check_made_by(model, out / "predictions", subject, overwrite, allowed)
    run = {"device": device, "dtype": dtype, "batch_sizes": extract_batch_sizes}
    prepared = _prepare(model, paths, out, shard, progress, settings, overwrite, run)
    if prepared is None:  # more shards than files
        return {**report, "seconds": time.time() - t0}
    inputs, events, to_cache, config, extractors = prepared
    # every check has passed: from here on, files are written
    for cache, key, table in to_cache.values():
        _write(cache, _json_bytes({"source": key, "events": table.to_dict("records")}))
    stages, names = report["stage_seconds"], [item.name for item in inputs]
    stages["events"], t = time.time() - t0, time.time()
    for name in _bar(names, "extract", progress):
        done = extract_events(events[events["timeline"] == name], out / "store", config, extractors=extractors,
                              overwrite=overwrite)
        for k in ("written", "skipped"):
            report["extract"][k] += done[k]
    stages["extract"], t = time.time() - t, time.time()
    report["predict"] = predict_store(model, out / "store", out / "predictions", subject=subject, batch_size=batch_size,
                                      timelines=names, overwrite=overwrite, progress=progress, shard=(0, 1),
                                      allow_other_subject=allow_other_subject, allow_other_recipe=allow_other_recipe)
    stages["predict"], t = time.time() - t, time.time()
    for item in _bar(inputs, "maps", progress):
        summary, wrote = _file_outputs(model, out, item, report["predict"]["made_by"], subject, overwrite=overwrite,
                                       figures=figures)
        report["maps"]["written" if wrote else "skipped"].append(item.name)
        report["files"].append(summary)
    _write_overall_summary(out)
    stages["maps"] = time.time() - t
    report["seconds"] = time.time() - t0
    return report


def _prepare(model, paths, out: Path, shard, progress: bool, settings: dict, overwrite: bool, run: dict):
    """The checks of the inputs, before anything is written: (inputs of this shard, events, events to cache,
    recipe, extractors), or None when the shard has no input."""
    from nforge_jax.extract.run import build_extractors, check_sources

    config = _recipe(model, progress, **run)
    every = collect_inputs(paths)
    mine = set(shard_names([item.name for item in every], check_shard(shard)))
    inputs = [item for item in every if item.name in mine]
    if not inputs:
        return None
    _check_models(inputs, config)
    events, to_cache = _events(inputs, out, config, settings, overwrite)
    extractors = build_extractors(config)
    check_sources(events, extractors)
    return inputs, events, to_cache, config, extractors


def _check_made_by(model, pred_dir: Path, subject, overwrite: bool, allowed) -> dict:
    """What makes this run's predictions (`inference.provenance.made_by`); an output directory holding another
    checkpoint's or subject's predictions is refused before its store is touched (``predict_store`` would refuse
    it only after the extraction)."""
    from nforge_jax.inference import provenance
    from nforge_jax.inference.batch import PredictionsMismatch, read_marker
    from nforge_jax.inference.checks import resolve_subject

    made = provenance.made_by(model, resolve_subject(model, subject), allowed=allowed)
    marker = None if overwrite else read_marker(pred_dir)
    if marker is not None:
        remedy = "use another --out, or --overwrite to redo everything"
        if "provenance" not in marker:
            raise PredictionsMismatch(f"{pred_dir}: written by an older nforge predict that recorded no provenance; "
                                      f"{remedy}")
        provenance.check_same_maker(made, marker, expected_what="this run",
                                    got_what=f"the predictions in {pred_dir}", remedy=remedy)
    return made


OUTPUTS = {"viewer": "viewer.html", "mean_activity": "mean_activity.png", "variance_shares": "variance_shares.png",
           "maps": "maps.npz"}


def _file_outputs(model, out: Path, item: MediaInput, made: dict, subject, *, overwrite: bool, figures: bool):
    """(summary, whether anything was computed) of one input: maps.npz, the viewer page and the PNGs, then
    summary.json; an existing summary of the same predictions is kept."""
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.attribution import store_variance_shares
    from nforge_jax.inference.batch import finished_timelines, read_predictions

    pred_dir, folder = out / "predictions", out / "maps" / item.name
    record = finished_timelines(pred_dir)[item.name]
    wanted = {k: v for k, v in OUTPUTS.items() if figures or k == "maps"}
    old = _read_json(folder / "summary.json")
    if (not overwrite and old is not None and old.get("predictions", {}).get("sha256") == record["sha256"]
            and all((folder / f).is_file() for f in wanted.values())):
        return old, False
    preds = np.asarray(read_predictions(pred_dir, item.name), np.float32)
    store = FeatureStore.open(out / "store")
    shares = None
    if len(preds) >= 2:  # a variance needs two rows
        shares = store_variance_shares(model, store, [item.name], subject=subject, fmri=False)
    mods = list(model.config.modalities)
    maps = {"mean_activity": preds.mean(0)}
    maps.update({f"share_{m}": shares[m] for m in mods + ["baseline"]} if shares else {})
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / OUTPUTS["maps"]) as f:
        np.savez(f, **maps)
    if figures:
        _draw(folder, item.name, preds, maps, mods, record, model.output_space)
    meta = store.meta(item.name)
    summary = {
        "name": item.name, "source": str(item.path), "kind": item.kind,
        "word_timings": str(item.word_timings) if item.word_timings else None,
        "duration_s": float(meta.get("duration_s", len(preds))), "n_rows": int(len(preds)),
        "modalities": [m for m in mods if m in store.modalities(item.name)],
        "mean_activity": {"min": float(maps["mean_activity"].min()), "max": float(maps["mean_activity"].max())},
        "variance_shares": ({m: float(np.nanmedian(shares[m])) for m in mods + ["baseline"]} if shares else None),
        "dominant": _dominant(shares, mods) if shares else None,
        "outputs": {k: str(folder / v) for k, v in wanted.items()},
        "predictions": {"file": str(pred_dir / record["file"]), "sha256": record["sha256"]},
        "provenance": made,  # the prediction directory's marker and record say the same (predict_store checks)
    }
    _write(folder / "summary.json", _json_bytes(summary))
    return summary, True


def _dominant(shares: dict, mods: list[str]) -> dict:
    """The fraction of outputs where each modality has the largest share."""
    stack = np.nan_to_num(np.stack([shares[m] for m in mods]), nan=-np.inf)
    valid = np.isfinite(np.stack([shares[m] for m in mods])).any(0)
    top = stack.argmax(0)[valid]
    return {m: float((top == i).mean()) if top.size else float("nan") for i, m in enumerate(mods)}


def _draw(folder: Path, name: str, preds, maps: dict, mods: list[str], record: dict, space) -> None:
    """viewer.html, mean_activity.png and variance_shares.png (one row per modality, shares from 0 to 1)."""
    import matplotlib.image

    from nforge_jax.viz.surface import figure_to_array, save_figure
    from nforge_jax.viz.view import view_predictions

    view_predictions(preds, folder / OUTPUTS["viewer"], space=space, title=name, tr_s=float(record.get("tr_s", 1.0)),
                     start_s=float(record.get("start_s", 0.0)))
    save_figure(_map_figure(maps["mean_activity"], space, title=f"{name}: mean predicted activity",
                            colorbar_label="predicted BOLD (a.u.)"), folder / OUTPUTS["mean_activity"])
    rows = [figure_to_array(_map_figure(maps[f"share_{m}"] if f"share_{m}" in maps else np.full_like(
        maps["mean_activity"], np.nan), space, title=f"{name}: {m} share of the prediction's variance",
        cmap="viridis", vmin=0.0, vmax=1.0, symmetric=False, colorbar_label="share")) for m in mods]
    with atomic_open(folder / OUTPUTS["variance_shares"]) as f:
        matplotlib.image.imsave(f, np.concatenate(rows, 0), format="png")


def _map_figure(values, space, **style):
    """A cortical map, or MNI slices for a subcortical output space."""
    if space.name == "subcortical":
        from nforge_jax.data.subcortical import load_grid
        from nforge_jax.viz.volume import plot_subcortical

        return plot_subcortical(values, load_grid(), **style)
    from nforge_jax.viz.surface import plot_cortex

    return plot_cortex(values, **style)


def _read_json(path: Path):
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def summary_line(summary: dict) -> str:
    """One line per input: duration, rows, variance shares and where its outputs are."""
    head = f"{summary['name']}: {summary['duration_s']:.1f} s, {summary['n_rows']} TRs from " \
           f"{'+'.join(summary['modalities'])}"
    shares = summary.get("variance_shares")
    if shares:
        parts = ", ".join(f"{m} {v:.2f}" for m, v in shares.items() if m != "baseline")
        top = max(summary["dominant"], key=summary["dominant"].get)
        head += f"; median variance share {parts}; {top} dominates {100 * summary['dominant'][top]:.0f}% of outputs"
    else:
        head += "; too short for variance shares"
    return f"{head}; maps in {Path(summary['outputs']['maps']).parent}"


def _write_overall_summary(out: Path) -> None:
    """OUT/summary.json and summary.txt: every input finished so far (by any shard)."""
    files = [s for s in (_read_json(p) for p in sorted((out / "maps").glob("*/summary.json"))) if s is not None]
    for path, data in ((out / "summary.json", _json_bytes({"files": files})),
                       (out / "summary.txt", "".join(summary_line(s) + "\n" for s in files).encode())):
        if not path.is_file() or path.read_bytes() != data:  # a rerun that changed nothing rewrites nothing
            _write(path, data)
