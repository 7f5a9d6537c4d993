"""Extract features for every timeline of an events table into a FeatureStore (``nforge extract``).

Per timeline (rows sharing ``timeline``): each configured extractor with matching events (Word -> text,
Audio -> audio, Video -> video) fills a (T, L, D) array on the 2 Hz grid of timeline time (row k covers
[k/2, (k+1)/2) s, T = ceil(2 * latest stop)); all modalities are then written in one atomic
``write_timeline``. The timeline's meta records ``start_s``/``duration_s`` (span of its events),
``extractors`` (model id, layer fractions, aggregation, chosen hidden-state indices per modality) and
``extract_signature`` (the extractor settings and a hash of the timeline's events).

Resumable: a timeline whose stored signature equals the one it would get is skipped; an interrupted
timeline never reached its manifest, so it is redone. An existing timeline's fMRI and other modalities
are kept. Models load once, on first use; fp16/bf16 on a GPU (``dtype="auto"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from nforge_jax.data.events import validate_events
from nforge_jax.data.store import FeatureStore
from nforge_jax.extract.audio import AudioConfig, AudioExtractor
from nforge_jax.extract.text import TextConfig, TextExtractor
from nforge_jax.extract.video import VideoConfig, VideoExtractor

__all__ = ["ExtractConfig", "build_extractors", "timeline_grid", "extract_timeline", "extract_events",
           "read_events_file", "add_arguments", "config_from_args", "run_cli", "main"]

MODALITIES = ("text", "audio", "video")
FEATURE_HZ = 2.0


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    text: TextConfig = TextConfig()
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()
    modalities: tuple[str, ...] = MODALITIES
    device: str = "auto"  # "auto": cuda if available, else cpu
    dtype: str = "auto"  # "auto": bfloat16/float16 on GPU, float32 on CPU
    progress: bool = True

    def __post_init__(self):
        mods = tuple(self.modalities)
        bad = [m for m in mods if m not in MODALITIES]
        if bad or not mods:
            raise ValueError(f"ExtractConfig.modalities: expected a non-empty subset of {MODALITIES}, got {mods}")
        object.__setattr__(self, "modalities", mods)


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
    sig = {m: dataclasses.asdict(getattr(config, m)) for m in sorted(modalities)}
    return json.loads(json.dumps({"settings": sig, "events_sha256": hashlib.sha256(blob).hexdigest()}))


def extract_timeline(events: pd.DataFrame, extractors: Mapping, *, progress=None, hz: float = FEATURE_HZ
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """Features {modality: (T, L, D) float32} and {modality: extractor meta} for one timeline's events.

    Modalities without matching events are absent. ``progress`` is called with the units done.
    """
    _, _, n_steps = timeline_grid(events, hz)
    feats, metas = {}, {}
    for m, ex in extractors.items():
        grid = ex.extract(events, n_steps, progress, hz)
        if grid is not None:
            feats[m] = grid
            metas[m] = ex.meta()
    return feats, metas


def _first(events: pd.DataFrame, column: str, default: str) -> str:
    if column in events.columns:
        for v in events[column]:
            if isinstance(v, str) and v:
                return v
    return default


def extract_events(events: pd.DataFrame, store, config: ExtractConfig = ExtractConfig(), *,
                   timelines: Sequence[str] | None = None, overwrite: bool = False, extractors=None) -> dict:
    """Extract every timeline of ``events`` into ``store`` (a FeatureStore or a path; created if absent).

    Returns {"written": [...], "skipped": [...], "empty": [...]} timeline names ("empty": no events any
    configured extractor reads).
    """
    events = validate_events(events)
    if not isinstance(store, FeatureStore):
        path = Path(store)
        store = FeatureStore.open(path) if (path / "nforge_store.json").is_file() else FeatureStore.create(path)
    extractors = extractors if extractors is not None else build_extractors(config)
    names = list(pd.unique(events["timeline"])) if timelines is None else list(timelines)
    report = {"written": [], "skipped": [], "empty": []}
    bar_cls = None
    if config.progress:
        try:
            from tqdm.auto import tqdm as bar_cls
        except ImportError:
            bar_cls = None
    for name in names:
        tl = events[events["timeline"] == name]
        if tl.empty:
            raise ValueError(f"timeline {name!r}: no events in the table")
        wanted = [m for m, ex in extractors.items() if tl["type"].isin(ex.event_types).any()]
        if not wanted:
            report["empty"].append(name)
            continue
        sig = _signature(config, tl, wanted)
        old = store.manifest(name) if name in store else None
        if old is not None and not overwrite and old["meta"].get("extract_signature") == sig:
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


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.75,1.0") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``nforge extract`` options."""
    d = ExtractConfig()
    parser.add_argument("--events", required=True, help="events table (.tsv/.csv/.parquet)")
    parser.add_argument("--store", required=True, help="FeatureStore directory (created if absent)")
    parser.add_argument("--modalities", default=",".join(d.modalities), help="subset of text,audio,video")
    for m in MODALITIES:
        c = getattr(d, m)
        parser.add_argument(f"--{m}-model", default=c.model_id, help=f"{m} model: hub id (cached) or directory")
        parser.add_argument(f"--{m}-layers", type=_fractions, default=c.layers,
                            help=f"layer fractions (default {','.join(map(str, c.layers))})")
        parser.add_argument(f"--{m}-aggregation", choices=["cat", "group_mean"], default=c.aggregation)
    parser.add_argument("--text-batch-size", type=int, default=d.text.batch_size)
    parser.add_argument("--video-batch-size", type=int, default=d.video.batch_size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--timeline", action="append", help="only these timelines (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished timelines")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args) -> ExtractConfig:
    return ExtractConfig(
        text=TextConfig(model_id=args.text_model, layers=args.text_layers, aggregation=args.text_aggregation,
                        batch_size=args.text_batch_size),
        audio=AudioConfig(model_id=args.audio_model, layers=args.audio_layers, aggregation=args.audio_aggregation),
        video=VideoConfig(model_id=args.video_model, layers=args.video_layers, aggregation=args.video_aggregation,
                          batch_size=args.video_batch_size),
        modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
        device=args.device, dtype=args.dtype, progress=not args.no_progress)


def run_cli(args) -> int:
    t0 = time.time()
    events = read_events_file(args.events)
    report = extract_events(events, args.store, config_from_args(args), timelines=args.timeline,
                            overwrite=args.overwrite)
    print(f"nforge extract: {len(report['written'])} timelines written, {len(report['skipped'])} already done, "
          f"{len(report['empty'])} without text/audio/video events, into {args.store} in {time.time() - t0:.1f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nforge extract", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
