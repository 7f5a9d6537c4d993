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


def release_chunks(ev: pd.DataFrame) -> pd.DataFrame:
    """TRIBE's ChunkEvents for Audio and for Video (60 s pieces, the last 30-90 s; shorter events whole), by
    neuralset's own chunk_events: the release extracts each piece on its own."""
    from neuralset.events.transforms.chunking import chunk_events

    for kind in ("Audio", "Video"):
        if (ev["type"] == kind).any():
            ev = chunk_events(ev, kind, None, 30.0, 60.0)
    return ev


def segments_features(extractor, events: pd.DataFrame, window_s: float = 100.0, hz: float = 2.0) -> np.ndarray:
    """(n_windows * window_s * hz, L, D): the extractor called on each 100 s window from the earliest start,
    on the events cut as TRIBE's ChunkEvents cuts them (``release_chunks``)."""
    ev = release_chunks(ns_events(events))
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


VIDEO_FPS, VIDEO_SIZE = 25, (44, 60)  # the textured test film: 25 fps, (height, width)


def write_textured_mp4(path, n_frames: int = 125, fps: int = VIDEO_FPS, size=VIDEO_SIZE):
    """Frame i: red = horizontal ramp shifted by 7 i, green = vertical ramp, blue = noise (mpeg4, no sound)."""
    import av

    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.bit_rate = 4_000_000
        for i in range(n_frames):
            img = np.stack([(xx * 255 // (w - 1) + 7 * i) % 256, yy * 255 // (h - 1),
                            rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
            for pk in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
    return path


def write_release_video_model(model_dir):
    """A 40-layer V-JEPA 2 of width 16 (64 frames per clip, crop 32), the released model's shape but its width.
    neuralset refuses model names that contain "video": keep that word out of ``model_dir``."""
    import json

    import torch
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    VJEPA2Model(VJEPA2Config(crop_size=32, frames_per_clip=64, patch_size=8, tubelet_size=2, hidden_size=16,
                             num_hidden_layers=40, num_attention_heads=2, mlp_ratio=2.0, pred_hidden_size=16,
                             pred_num_hidden_layers=1, pred_num_attention_heads=2,
                             pred_num_mask_tokens=2)).save_pretrained(model_dir)
    (model_dir / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "VJEPA2VideoProcessor", "crop_size": {"height": 32, "width": 32},
        "do_resize": True, "do_center_crop": True, "do_rescale": True, "do_normalize": True,
        "rescale_factor": 1 / 255, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "resample": 2, "size": {"shortest_edge": 36}}))
    return model_dir


class _StandInProcessor:
    """Called as neuralset calls the V-JEPA 2 processor (``videos=[frames]``), answering with our
    VideoPreprocessor per frame: transformers' VJEPA2VideoProcessor needs torchvision, which does not load
    beside the CPU build of torch, so video is compared from the processor's output on."""

    def __init__(self, model_dir):
        from nforge_jax.extract.video import VideoPreprocessor

        self.pre = VideoPreprocessor.from_pretrained(model_dir)

    @classmethod
    def from_pretrained(cls, model_dir, **kwargs):
        return cls(model_dir)

    def __call__(self, videos, return_tensors="pt"):
        import torch
        from transformers import BatchFeature

        clip = np.stack([self.pre(np.asarray(f)) for f in videos])
        return BatchFeature({"pixel_values_videos": torch.from_numpy(clip)[None]}, tensor_type=return_tensors)


def neuralset_video_features(model_dir, mp4, span=None, max_imsize=None, fps: float = VIDEO_FPS, device: str = "cpu"):
    """neuralset's HuggingFaceVideo as in the release -> ((L, D, T) features, offset, duration) of the Video
    event of ``mp4`` (``span``: (offset, duration) in the file; None: the whole file)."""
    import warnings

    import neuralset as ns
    import transformers
    from neuralset.events import etypes

    extra = {} if span is None else {"offset": span[0], "duration": span[1], "frequency": float(fps)}
    saved = getattr(transformers, "AutoVideoProcessor", None)
    transformers.AutoVideoProcessor = _StandInProcessor  # what neuralset imports
    try:
        with offline_hub():
            event = etypes.Video.from_dict(dict(type="Video", filepath=str(mp4), start=0.0, timeline="t", **extra))
            image = dict(name="HuggingFaceImage", model_name=str(model_dir), device=device, layers=[0.5, 0.75, 1.0],
                         layer_aggregation="group_mean", cache_n_layers=20, token_aggregation="mean",
                         infra={"keep_in_ram": False})
            ext = ns.extractors.HuggingFaceVideo(image=image, clip_duration=4, frequency=2, max_imsize=max_imsize,
                                                 infra={"keep_in_ram": False})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = ext(event, start=0.0, duration=event.duration)
    finally:
        transformers.AutoVideoProcessor = saved
    return out.numpy(), event.offset, event.duration


def write_release_audio_model(audio_dir):
    """A random Wav2Vec-BERT 2.0 with the release's depth (24 layers) and width 16, and its feature extractor."""
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(1)
    Wav2Vec2BertModel(Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=24, num_attention_heads=2,
                                         intermediate_size=32, output_hidden_size=16, conv_depthwise_kernel_size=3,
                                         feature_projection_input_dim=160, add_adapter=False,
                                         # plain attention: 3x faster than relative_key on 60 s chunks, and
                                         # both sides run the same model either way
                                         position_embeddings_type=None)).save_pretrained(audio_dir)
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
                                padding_value=1.0).save_pretrained(audio_dir)
    return audio_dir
