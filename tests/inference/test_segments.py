"""predict(events) on a converted small TRIBE v2 checkpoint vs the PyTorch reference."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import make_release, rel_err
from nforge_jax.convert.tribev2 import convert_tribev2
from nforge_jax.extract.audio import AudioConfig
from nforge_jax.extract.recipe import ExtractConfig
from nforge_jax.extract.text import TextConfig
from nforge_jax.extract.video import VideoConfig
from nforge_jax.inference.model import NForgeModel
from nforge_jax.inference.segments import predict_events, timeline_features
from nforge_jax.inference.stimulus import add_context, get_events_dataframe
from test_stimulus import word_file

DIMS = {"text": (2, 32), "audio": (2, 32), "video": (2, 32)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    ref = make_release(root / "tribev2", feature_dims=DIMS, n_outputs=40, n_output_timesteps=10)
    convert_tribev2(root / "tribev2", root / "nforge")
    return ref, NForgeModel.from_pretrained(root / "nforge")


def extract_config(models):
    return ExtractConfig(text=TextConfig(model_id=str(models["text"]), layers=(0.5, 1.0)),
                         audio=AudioConfig(model_id=str(models["audio"])),
                         video=VideoConfig(model_id=str(models["video"])), progress=False)


def reference_rows(ref, feats, n_win, subject=None):
    """Zero-padded 10 s windows from row 0 through the PyTorch reference -> (n_win * 10, 40)."""
    rows = []
    for w in range(n_win):
        data = {}
        for m, x in feats.items():
            buf = np.zeros((20, *x.shape[1:]), np.float32)
            part = x[20 * w: 20 * (w + 1)]
            buf[: len(part)] = part
            data[m] = torch.from_numpy(buf.transpose(1, 2, 0)[None].copy())
        with torch.no_grad():
            sid = None if subject is None else torch.tensor([subject])
            rows.append(ref(data, sid)[0].numpy().T)
    return np.concatenate(rows)


def test_predict_video_matches_reference(converted, tiny_models, media, tmp_path):
    ref, model = converted
    events = get_events_dataframe(video_path=media["mp4"], word_timings=word_file(tmp_path))
    cfg = extract_config(tiny_models)
    preds, segments = predict_events(model, events, extract_config=cfg)
    end = float((events["start"] + events["duration"]).max())
    n_keep = math.ceil(end)  # 1 s segments from 0 overlapping the ~5 s stimulus
    assert preds.shape == (n_keep, 40) and preds.dtype == np.float32
    assert [(s.timeline, s.start, s.duration) for s in segments] == [("default", float(i), 1.0) for i in range(n_keep)]
    feats = timeline_features(events, extract_config=cfg)["default"]
    assert sorted(feats) == ["audio", "text", "video"]
    expected = reference_rows(ref, feats, 1)[:n_keep]
    assert rel_err(preds, expected) <= 1e-5
    # a named training subject uses its own head row
    sub, _ = predict_events(model, events, subject=1, features={"default": feats})
    assert rel_err(sub, reference_rows(ref, feats, 1, subject=1)[:n_keep]) <= 1e-5
    assert np.abs(sub - preds).max() > 1e-3


def test_predict_text_only_long_story_windows_and_empty_segments(converted, tiny_models):
    """Words in [1, 23.5) s: 3 windows of 10 s from the first word; silent 1 s segments are dropped."""
    ref, model = converted
    words = [("w%d" % i, 1.0 + 0.5 * i) for i in range(10)] + [("late", 22.9)]
    events = add_context(pd.DataFrame([{"type": "Word", "start": s, "duration": 0.6, "text": w,
                                        "timeline": "story"} for w, s in words]))
    cfg = extract_config(tiny_models)
    feats = timeline_features(events, extract_config=cfg)["story"]
    assert sorted(feats) == ["text"]
    preds, segments = predict_events(model, events, extract_config=cfg)
    starts = [s.start for s in segments]
    # events cover [1.0, 6.1) and [22.9, 23.5): segments [1, 2) .. [6, 7), [22, 23) and [23, 24)
    assert starts == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 22.0, 23.0]
    full = reference_rows(ref, {"text": feats["text"][2:]}, 3)  # rows from round(2 * s0) = 2
    keep = [0, 1, 2, 3, 4, 5, 21, 22]
    assert rel_err(preds, full[keep]) <= 1e-5
    everything, segs = predict_events(model, events, features={"story": feats}, remove_empty_segments=False)
    assert everything.shape == (30, 40) and segs[-1].start == 30.0
