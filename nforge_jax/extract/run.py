"""Extract every timeline of an events table into a FeatureStore (``nforge extract``).

Per timeline (rows sharing ``timeline``): each configured extractor with matching events (Word -> text,
Audio -> audio, Video -> video) fills a (T, L, D) array on the 2 Hz grid of timeline time (row k covers
[k/2, (k+1)/2) s; events are placed by TRIBE v2's rule in 100 s windows from the timeline's earliest
event, T = ceil(2 * latest stop), longer only where a placement reaches past it); all modalities are then
written in one atomic ``write_timeline``. The timeline's meta records ``start_s``/``duration_s`` (span of
its events), ``extractors`` (model id, layer settings, chosen hidden-state indices per modality) and
``extract_signature`` (the recipe of every modality and a hash of the timeline's events).

Before anything is created, every model is resolved (never downloaded) and every media file checked, so a
missing model leaves no empty store behind. Resumable: a timeline whose stored signature equals the one
it would get is skipped; an interrupted timeline never reached its manifest, so it is redone. Several
independent processes can share one store (``shard``): each takes every N-th timeline. An existing
timeline's fMRI and other modalities are kept. Models load once, on first use; fp16/bf16 on a GPU
(``dtype="auto"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from nforge_jax.data.events import validate_events
from nforge_jax.data.provenance import NOT_COMPARED, timeline_recipe
from nforge_jax.data.shards import shard_names
from nforge_jax.data.store import MARKER_FILE, FeatureStore, StoreError
from nforge_jax.extract.audio import AudioExtractor
from nforge_jax.data.timebase import FEATURE_HZ, WINDOW_S
from nforge_jax.extract.models import resolve_model
from nforge_jax.extract.recipe import MODALITIES, ExtractConfig
from nforge_jax.extract.text import TextExtractor
from nforge_jax.extract.video import VideoExtractor

__all__ = ["ExtractConfig", "build_extractors", "timeline_grid", "extract_timeline", "extract_events",
           "read_events_file", "check_sources", "open_store", "recipe_of_checkpoint", "config_from_args"]

def build_extractors(config: ExtractConfig) -> dict:
    """Extractor objects (models load lazily on first use)."""
    table = {"text": (TextExtractor, config.text), "audio": (AudioExtractor, config.audio),
             "video": (VideoExtractor, config.video)}
    return {m: table[m][0](table[m][1], device=config.device, dtype=config.dtype) for m in config.modalities}


def timeline_grid(events: pd.DataFrame, hz: float = FEATURE_HZ) -> tuple[float, float, int]:
    """(start_s, end_s, n_steps) of one timeline: span of its non-fMRI events, n = ceil(hz * end)."""
    rows = events[events["type"] != "Fmri"]
    if rows.empty:
        rows = events
    start = float(rows["start"].min())
    end = float((rows["start"] + rows["duration"]).max())
    return start, end, max(1, int(math.ceil(end * hz - 1e-9)))


def _signature(config: ExtractConfig, events: pd.DataFrame, modalities: Sequence[str]) -> dict:
    cols = [c for c in ("type", "start", "duration", "text", "filepath", "offset", "context") if c in events.columns]
    blob = events[cols].to_csv(index=False).encode()
    recipe = config.to_dict()
    sig = {m: recipe[m] for m in sorted(modalities)}
    return json.loads(json.dumps({"settings": sig, "events_sha256": hashlib.sha256(blob).hexdigest()}))


def _same_work(old: dict | None, new: dict) -> bool:
    """Whether a timeline's stored signature is of the same work as ``new``: equal once the settings that change
    no feature (NOT_COMPARED's batch sizes: clips / chunks per forward) are left out of both."""
    def strip(sig):
        settings = {m: {k: v for k, v in kv.items() if not (k == "batch_size" and m in NOT_COMPARED["batch_size"])}
                    for m, kv in sig.get("settings", {}).items()}
        return {**sig, "settings": settings}

    return isinstance(old, dict) and strip(old) == strip(new)


def extract_timeline(events: pd.DataFrame, extractors: Mapping, *, progress=None, hz: float = FEATURE_HZ
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """Features {modality: (T, L, D) float32} and {modality: extractor meta} for one timeline's events.

    Modalities without matching events are absent. ``progress`` is called with the units done.
    """
    start, end, n_steps = timeline_grid(events, hz)
    # room for every 100 s window from the first event; trailing rows no event reached are cut below
    rows = int(round(hz * start)) + int(round(hz * WINDOW_S)) * max(1, math.ceil((end - start) / WINDOW_S - 1e-9))
    feats, metas = {}, {}
    for m, ex in extractors.items():
        grid = ex.extract(events, max(rows, n_steps), progress, hz, origin=start)
        if grid is not None:
            feats[m] = grid
            metas[m] = ex.meta()
    if feats:
        used = [np.flatnonzero(np.abs(g).reshape(len(g), -1).max(1) > 0) for g in feats.values()]
        n = max([n_steps] + [int(u[-1]) + 1 for u in used if u.size])
        feats = {m: g[:n] for m, g in feats.items()}
    return feats, metas


def check_sources(events: pd.DataFrame, extractors: Mapping) -> None:
    """Every model the events need resolves locally, the device they run on exists here and every media file
    exists: checked before anything is written, so a missing model, device or file leaves nothing behind
    (ModelNotAvailable / ValueError / FileNotFoundError)."""
    for m, ex in extractors.items():
        rows = events[events["type"].isin(ex.event_types)]
        if rows.empty:
            continue
        resolve_model(ex.config.model_id, m)
        ex.check_device()
        if "filepath" in rows.columns:
            for path in pd.unique(rows["filepath"].dropna()):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{path}: media file of a {'/'.join(ex.event_types)} event not found")


def open_store(path) -> FeatureStore:
    """Open the store at ``path``, creating it if absent (safe when several processes start at once)."""
    path = Path(path)
    for _ in range(50):
        if (path / MARKER_FILE).is_file():
            return FeatureStore.open(path)
        try:
            return FeatureStore.create(path)
        except StoreError:
            if not path.is_dir() or not any(p.name != MARKER_FILE for p in path.iterdir()):
                raise
            time.sleep(0.1)  # another process is creating it: its marker appears next
    return FeatureStore.open(path)


def _first(events: pd.DataFrame, column: str, default: str) -> str:
    if column in events.columns:
        for v in events[column]:
            if isinstance(v, str) and v:
                return v
    return default


def extract_events(events: pd.DataFrame, store, config: ExtractConfig = ExtractConfig(), *,
                   timelines: Sequence[str] | None = None, overwrite: bool = False, extractors=None,
                   shard: tuple[int, int] | None = None) -> dict:
    """Extract every timeline of ``events`` into ``store`` (a FeatureStore or a path; created if absent).

    ``shard=(I, N)``: only every N-th timeline from the I-th (independent processes sharing one store).
    Returns {"written": [...], "skipped": [...], "empty": [...]} timeline names ("empty": no events any
    configured extractor reads).
    """
    events = validate_events(events)
    early = events[events["start"] < 0]
    if not early.empty:  # the 2 Hz grid starts at 0 s: features before it would be dropped silently
        row = early.iloc[0]
        raise ValueError(f"timeline {row['timeline']!r}: a {row['type']} event starts at {row['start']} s; features "
                         "begin at 0 s: shift the events so that every start is >= 0")
    extractors = extractors if extractors is not None else build_extractors(config)
    names = list(pd.unique(events["timeline"])) if timelines is None else list(timelines)
    missing = [n for n in names if n not in set(events["timeline"])]
    if missing:
        raise ValueError(f"timeline {missing[0]!r}: no events in the table")
    names = shard_names(names, shard)
    check_sources(events[events["timeline"].isin(names)], extractors)
    if not isinstance(store, FeatureStore):
        store = open_store(store)
    report = {"written": [], "skipped": [], "empty": []}
    bar_cls = None
    if config.progress:
        try:
            from tqdm.auto import tqdm as bar_cls
        except ImportError:
            bar_cls = None
    for name in names:
        tl = events[events["timeline"] == name]
        wanted = [m for m, ex in extractors.items() if tl["type"].isin(ex.event_types).any()]
        if not wanted:
            report["empty"].append(name)
            continue
        sig = _signature(config, tl, wanted)
        old = store.manifest(name) if name in store else None
        if old is not None and not overwrite and _same_work(old["meta"].get("extract_signature"), sig):
            report["skipped"].append(name)
            continue
        todo = {m: extractors[m] for m in wanted}
        bar = None
        if bar_cls is not None:
            bar = bar_cls(total=sum(ex.n_units(tl) for ex in todo.values()), desc=str(name)[:40], unit="item",
                          leave=False)
        t0 = time.time()
        try:
            feats, metas = extract_timeline(tl, todo, progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        start, end, _ = timeline_grid(tl)
        meta = dict(old["meta"]) if old is not None else {}
        meta.update({
            "study": meta.get("study") or _first(tl, "study", "events"),
            "subject": meta.get("subject") or _first(tl, "subject", "default"),
            "start_s": start, "duration_s": end - start, "feature_hz": FEATURE_HZ,
            "extractors": {**meta.get("extractors", {}), **metas},
            "extract_recipe": {**timeline_recipe(meta), **{m: sig["settings"][m] for m in feats}},
            "extract_signature": sig, "extract_seconds": round(time.time() - t0, 3),
        })
        keep = {}
        fmri = None
        if old is not None:
            keep = {m: store.features(name, m) for m in store.modalities(name) if m not in feats}
            fmri = store.fmri(name)
        store.write_timeline(name, features={**keep, **feats}, fmri=fmri, meta=meta, overwrite=old is not None,
                             fmri_dtype=(old["arrays"]["fmri"]["dtype"] if fmri is not None else "float32"))
        report["written"].append(name)
    return report


def read_events_file(path) -> pd.DataFrame:
    """An events table from .tsv / .csv (or .parquet), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: events file not found")
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        df = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    elif suffix == ".csv":
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unknown events file type {suffix!r}; expected .tsv, .csv or .parquet")
    return validate_events(df, source=str(path))


def config_from_args(args) -> ExtractConfig:
    """The recipe: the checkpoint's (``--checkpoint``) or the defaults, with the options given on top. With
    a checkpoint only model ids may be changed: any other setting would make features it was not trained on."""
    run = dict(device=args.device, dtype=args.dtype, progress=not args.no_progress)
    settings = {m: {k: getattr(args, f"{m}_{k}", None) for k in ("layers", "aggregation", "batch_size")}
                for m in MODALITIES}
    settings = {m: {k: v for k, v in kv.items() if v is not None} for m, kv in settings.items()}
    models = {m: getattr(args, f"{m}_model") for m in MODALITIES}
    if args.checkpoint is not None:
        # clips / chunks per forward: speed only (not compared between recipes), so a checkpoint's recipe still holds
        speed = {m: settings[m].pop("batch_size") for m in NOT_COMPARED["batch_size"] if "batch_size" in settings[m]}
        given = [f"--{m}-{k.replace('_', '-')}" for m, kv in settings.items() for k in kv]
        if given or args.modalities is not None:
            raise ValueError(f"{(given or ['--modalities'])[0]}: cannot be combined with --checkpoint, whose "
                             "recipe fixes every setting but the model ids, --audio-batch-size and "
                             "--video-batch-size")
        return recipe_of_checkpoint(args.checkpoint, **run).with_model_ids(**models).with_batch_sizes(**speed)
    d = ExtractConfig()
    parts = {m: dataclasses.replace(getattr(d, m), **kv) for m, kv in settings.items()}
    mods = tuple(x.strip() for x in (args.modalities or ",".join(d.modalities)).split(",") if x.strip())
    return ExtractConfig(**parts, modalities=mods, **run).with_model_ids(**models)


def recipe_of_checkpoint(path, **run) -> ExtractConfig:
    """The extraction recipe a checkpoint records (nforge_jax: ``metadata["extract_recipe"]`` of
    config.json; a TRIBE v2 release: its config.yaml). Read without loading any weights."""
    path = Path(path)
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        return ExtractConfig.from_tribev2_config(path, **run)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path}: neither an nforge_jax checkpoint (config.json) nor a TRIBE v2 release "
                                "(config.yaml)")
    try:
        doc = json.loads(cfg.read_text())
    except ValueError as e:
        raise ValueError(f"{cfg}: not JSON ({e})") from None
    recipe = (doc.get("metadata") or {}).get("extract_recipe") if isinstance(doc, dict) else None
    if recipe is None:
        raise ValueError(f"{cfg}: field metadata.extract_recipe is missing: this checkpoint does not record how its "
                         "features were extracted; pass the settings (--text-layers ...) instead of --checkpoint")
    return ExtractConfig.from_dict(recipe, source=f"{cfg}: metadata.extract_recipe", **run)
