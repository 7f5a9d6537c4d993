"""extract_events into a FeatureStore: layout, meta, resume (finished skipped, interrupted redone), CLI."""

import dataclasses

import numpy as np
import pytest

from nforge_jax.data.events import make_events
from nforge_jax.data.store import FeatureStore
from nforge_jax.extract.audio import AudioConfig
from nforge_jax.cli import main as nforge
from nforge_jax.extract.recipe import ExtractConfig
from nforge_jax.extract.run import build_extractors, extract_events
from nforge_jax.extract.text import TextConfig
from nforge_jax.extract.video import VideoConfig


def config(models, **kw):
    return ExtractConfig(text=TextConfig(model_id=str(models["text"]), layers=(0.5, 1.0)),
                         audio=AudioConfig(model_id=str(models["audio"])),
                         video=VideoConfig(model_id=str(models["video"]), layers=(1.0,)), progress=False, **kw)


def two_timelines(media):
    rows = [{"type": "Video", "start": 0.0, "duration": 2.0, "filepath": str(media["mp4"]), "timeline": "movie"},
            {"type": "Audio", "start": 0.0, "duration": 2.0, "filepath": str(media["mp4"]), "timeline": "movie"},
            {"type": "Word", "start": 0.6, "duration": 0.3, "text": "cat", "timeline": "movie"},
            {"type": "Audio", "start": 0.0, "duration": 3.2, "filepath": str(media["wav"]), "timeline": "story",
             "subject": "s1"},
            {"type": "Word", "start": 1.0, "duration": 0.4, "text": "warm", "timeline": "story", "subject": "s1"},
            {"type": "Word", "start": 1.5, "duration": 0.4, "text": "mat", "timeline": "story", "subject": "s1"}]
    return make_events(rows)


def test_store_layout_and_meta(tiny_models, media, tmp_path):
    events = two_timelines(media)
    report = extract_events(events, tmp_path / "store", config(tiny_models))
    assert report == {"written": ["movie", "story"], "skipped": [], "empty": []}
    store = FeatureStore.open(tmp_path / "store")
    assert store.timelines == ["movie", "story"]
    # T = ceil(2 * latest stop): movie 2.0 s -> 4 rows, story 3.2 s -> 7 rows
    assert {m: store.features("movie", m).shape for m in store.modalities("movie")} == {
        "audio": (4, 2, 32), "text": (4, 2, 32), "video": (4, 1, 32)}
    assert store.modalities("story") == ["audio", "text"] and store.features("story", "text").shape == (7, 2, 32)
    text = np.asarray(store.features("story", "text"), np.float32)
    assert np.abs(text[[2, 3]]).sum() > 0 and not text[[0, 1, 4, 5, 6]].any()  # words at rows 2 and 3 only
    meta = store.meta("story")
    assert meta["subject"] == "s1" and meta["duration_s"] == 3.2 and meta["feature_hz"] == 2.0
    ex = meta["extractors"]
    assert ex["text"]["layer_fractions"] == [0.5, 1.0] and ex["text"]["layer_indices"] == [2, 4]
    assert ex["text"]["model_id"] == str(tiny_models["text"]) and ex["audio"]["layer_indices"] == [2, 3]
    assert store.meta("movie")["extractors"]["video"]["layer_indices"] == [3]


class Boom(RuntimeError):
    pass


def test_resume_skips_finished_and_redoes_interrupted(tiny_models, media, tmp_path):
    events = two_timelines(media)
    cfg = config(tiny_models)
    extractors = build_extractors(cfg)
    real = extractors["audio"].extract

    def failing(ev, *a, **k):
        if ev["timeline"].iloc[0] == "story":
            raise Boom("killed mid-timeline")
        return real(ev, *a, **k)

    extractors["audio"].extract = failing
    with pytest.raises(Boom):
        extract_events(events, tmp_path / "store", cfg, extractors=extractors)
    store = FeatureStore.open(tmp_path / "store")
    assert store.timelines == ["movie"]
    stamp = (store._dir("movie") / "manifest.json").stat().st_mtime_ns
    report = extract_events(events, tmp_path / "store", cfg)
    assert report["skipped"] == ["movie"] and report["written"] == ["story"]
    assert (store._dir("movie") / "manifest.json").stat().st_mtime_ns == stamp
    # same result as an uninterrupted run
    fresh = tmp_path / "fresh"
    extract_events(events, fresh, cfg)
    other = FeatureStore.open(fresh)
    for t in ("movie", "story"):
        for m in store.modalities(t):
            np.testing.assert_array_equal(store.features(t, m), other.features(t, m))
    # changed settings redo the timelines they touch
    changed = dataclasses.replace(cfg, text=TextConfig(model_id=str(tiny_models["text"]), layers=(1.0,)))
    report = extract_events(events, tmp_path / "store", changed)
    assert report["written"] == ["movie", "story"]
    assert store.features("story", "text").shape == (7, 1, 32)


def test_fmri_of_an_existing_timeline_is_kept(tiny_models, media, tmp_path):
    store = FeatureStore.create(tmp_path / "store")
    fmri = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.write_timeline("story", fmri=fmri, meta={"study": "Mine", "subject": "s1", "tr_s": 1.0})
    events = two_timelines(media)
    extract_events(events[events["timeline"] == "story"], store, config(tiny_models))
    np.testing.assert_array_equal(store.fmri("story"), fmri)
    assert store.meta("story")["study"] == "Mine" and store.modalities("story") == ["audio", "text"]


def test_cli(tiny_models, media, tmp_path, capsys):
    events = two_timelines(media)
    tsv = tmp_path / "events.tsv"
    events.to_csv(tsv, sep="\t", index=False)
    args = ["extract", "--events", str(tsv), "--store", str(tmp_path / "store"), "--modalities", "text,audio",
            "--text-model", str(tiny_models["text"]), "--audio-model", str(tiny_models["audio"]),
            "--text-layers", "0,1", "--no-progress"]
    assert nforge(args) == 0
    assert "2 timelines written" in capsys.readouterr().out
    store = FeatureStore.open(tmp_path / "store")
    assert store.features("movie", "text").shape == (4, 2, 32) and "video" not in store.modalities("movie")
    assert nforge(args) == 0
    assert "0 timelines written, 2 already done" in capsys.readouterr().out
