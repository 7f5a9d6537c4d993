"""TRIBE v2's own extractors (Meta's neuralset 0.0.2, the version TRIBE v2 pins), run offline on local models.

Test-only: the package never imports neuralset. The release config (TRIBEV2_SPEC D.2) sets, for text,
audio and video: layers [0.5, 0.75, 1.0], layer_aggregation group_mean, cache_n_layers 20, token mean,
aggregation sum, frequency 2; text batch_size 4 and contextualized; audio norm_audio. ``segments_features``
calls an extractor on TRIBE's segments (100 s windows from the timeline's earliest event) and stacks them,
which is what the model sees.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd

RELEASE = dict(layers=[0.5, 0.75, 1.0], layer_aggregation="group_mean", cache_n_layers=20,
               token_aggregation="mean", aggregation="sum", frequency=2.0, device="cpu")


@contextlib.contextmanager
def offline_hub():
    """neuralset checks model names against the hub; a local directory is accepted without that call."""
    from neuralset.extractors.base import HuggingFaceMixin

    saved = HuggingFaceMixin.repo_exists
    HuggingFaceMixin.repo_exists = lambda self: True
    try:
        yield
    finally:
        HuggingFaceMixin.repo_exists = saved


def text_extractor(model_dir, cache, **overrides):
    from neuralset.extractors.text import HuggingFaceText

    kw = dict(RELEASE, batch_size=4, contextualized=True)
    kw.update(overrides)
    with offline_hub():
        return HuggingFaceText(model_name=str(model_dir), infra={"folder": str(cache)}, **kw)


def audio_extractor(model_dir, cache, **overrides):
    from neuralset.extractors.audio import Wav2VecBert

    kw = dict(RELEASE, norm_audio=True)
    kw.update(overrides)
    with offline_hub():
        return Wav2VecBert(model_name=str(model_dir), infra={"folder": str(cache)}, **kw)


def ns_events(events: pd.DataFrame) -> pd.DataFrame:
    """Our events table as neuralset's standardized events (Word/Audio/Video rows)."""
    from neuralset.events.utils import standardize_events

    keep = [c for c in ("type", "start", "duration", "timeline", "text", "context", "filepath", "offset",
                        "frequency", "language") if c in events.columns]
    df = events[keep].copy()
    if "offset" in df.columns:
        df["offset"] = df["offset"].fillna(0.0)
    return standardize_events(df.reset_index(drop=True))


def segments_features(extractor, events: pd.DataFrame, window_s: float = 100.0, hz: float = 2.0) -> np.ndarray:
    """(n_windows * window_s * hz, L, D): the extractor called on each 100 s window from the earliest start."""
    ev = ns_events(events)
    extractor.prepare(ev)
    s0 = float(events["start"].min())
    end = float((events["start"] + events["duration"]).max())
    n_win = max(1, math.ceil((end - s0) / window_s - 1e-9))
    parts = []
    for k in range(n_win):
        out = extractor(ev, start=s0 + k * window_s, duration=window_s).numpy()  # (L, D, T)
        parts.append(np.moveaxis(out, -1, 0))
    return np.concatenate(parts).astype(np.float32)


def relative_error(ours, ref) -> float:
    """max |ours - ref| / max |ref|."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def release_data_section(text="meta-llama/Llama-3.2-3B", audio="facebook/w2v-bert-2.0",
                         video="facebook/vjepa2-vitg-fpc64-256") -> dict:
    """The ``data`` extractor sections of TRIBE v2's config.yaml, dumped by neuralset's own classes configured
    as the release (TRIBEV2_SPEC D.2), so the replica has every field the real file has."""
    from neuralset.extractors.audio import Wav2VecBert
    from neuralset.extractors.image import HuggingFaceImage
    from neuralset.extractors.text import HuggingFaceText
    from neuralset.extractors.video import HuggingFaceVideo

    common = dict(layers=[0.5, 0.75, 1.0], layer_aggregation="group_mean", cache_n_layers=20)
    with offline_hub():
        t = HuggingFaceText(model_name=text, aggregation="sum", frequency=2.0, batch_size=4, **common)
        a = Wav2VecBert(model_name=audio, aggregation="sum", frequency=2.0, **common)
        v = HuggingFaceVideo(image=HuggingFaceImage(model_name=video, infra={"keep_in_ram": False}, **common),
                             clip_duration=4, frequency=2.0, aggregation="sum")
    return {"text_feature": t.model_dump(), "audio_feature": a.model_dump(), "video_feature": v.model_dump(),
            "features_to_use": ["text", "audio", "video"]}
