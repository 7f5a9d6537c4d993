"""Video features: V-JEPA 2 clip embeddings at 2 Hz (TRIBE v2's video extractor).

For each Video event, cut into chunks as TRIBE's ChunkEvents (``layers.chunk_spans``), each chunk of
duration d gives n = round(2 d) time points t_k = linspace(0, d, n + 1)[1:] (the right edges of the 2 Hz
bins). Time point k is the clip of F = ``frames_per_clip`` frames (the model config's, 64 for the
released model) shown at t_k - j * clip_s / F for j = F - 1 .. 0 (``clip_s`` = 4 s), times before the
chunk start clamped to it. Each clip is preprocessed (:class:`VideoPreprocessor`), run through the model
with ``output_hidden_states``, the hidden states averaged over all tokens -> (N, D) -> chosen layers
(L, D), added to row round(2 * chunk start) + k.

:class:`VideoPreprocessor` is the transformers ``VJEPA2VideoProcessor`` computation (that class needs
torchvision), with the values read from the model directory's ``video_preprocessor_config.json``
(or ``preprocessor_config.json``):

1. resize with bilinear interpolation (antialiased, half-pixel centres) so that the shorter edge is
   ``int(crop_size * 256 / 224)`` and the longer ``int(shorter_target * long / short)``, rounded back to
   uint8 values (torchvision resizes uint8 frames to uint8);
2. center crop ``crop_size``: top = int((H - crop) / 2), left = int((W - crop) / 2);
3. rescale by ``rescale_factor`` (1/255) and normalise: (x * rescale - mean) / std per channel
   (ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) unless the JSON says otherwise).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from nforge_jax.extract.audio import media_chunks
from nforge_jax.extract.layers import ModelExtractor, layer_indices, select_layers
from nforge_jax.extract.media import read_video_frames

__all__ = ["VideoConfig", "VideoExtractor", "VideoPreprocessor", "clip_times"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    model_id: str = "facebook/vjepa2-vitg-fpc64-256"
    layers: tuple[float, ...] = (0.75, 1.0)
    aggregation: str = "cat"
    cache_n_layers: int | None = None  # keep K evenly spaced hidden states first (layers.kept_states)
    token_aggregation: str = "mean"  # over a word's tokens / a clip's tokens: mean | sum | max | first | last
    clip_s: float = 4.0
    frames_per_clip: int | None = None  # None: the model config's frames_per_clip
    batch_size: int = 4  # clips per forward
    chunk_s: float = 60.0
    min_chunk_s: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation, self.cache_n_layers)


@dataclasses.dataclass(frozen=True)
class VideoPreprocessor:
    crop_size: int = 256
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @property
    def shortest_edge(self) -> int:
        return int(self.crop_size * 256 / 224)

    @classmethod
    def from_pretrained(cls, directory, default_crop: int | None = None) -> "VideoPreprocessor":
        """Read the processor JSON of a model directory; without one, the documented V-JEPA 2 defaults."""
        directory = Path(directory)
        for name in PROCESSOR_FILES:
            f = directory / name
            if f.is_file():
                try:
                    cfg = json.loads(f.read_text())
                except ValueError as e:
                    raise ValueError(f"{f}: not JSON ({e})") from None
                crop = cfg.get("crop_size", default_crop or 256)
                if isinstance(crop, dict):
                    if "height" not in crop:
                        raise ValueError(f"{f}: field 'crop_size' is {crop!r}, expected an int or {{'height': ..}}")
                    crop = crop["height"]
                kw = {"crop_size": int(crop)}
                for key in ("image_mean", "image_std"):
                    if cfg.get(key) is not None:
                        v = cfg[key]
                        kw[key] = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
                for key in ("rescale_factor",):
                    if cfg.get(key) is not None:
                        kw[key] = float(cfg[key])
                for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
                    if cfg.get(key) is not None:
                        kw[key] = bool(cfg[key])
                return cls(**kw)
        return cls(crop_size=int(default_crop or 256))

    def resize_shape(self, height: int, width: int) -> tuple[int, int]:
        target = self.shortest_edge
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(target * long / short)
        return (new_long, target) if width <= height else (target, new_long)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, crop, crop) float32."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        if self.do_resize:
            h, w = self.resize_shape(x.shape[2], x.shape[3])
            if (h, w) != tuple(x.shape[2:]):
                x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                                    antialias=True)
                x = x.round_().clamp_(0, 255)
        if self.do_center_crop:
            c = self.crop_size
            h, w = x.shape[2:]
            if c > h or c > w:
                pad = [(c - w) // 2 if c > w else 0, (c - w + 1) // 2 if c > w else 0,
                       (c - h) // 2 if c > h else 0, (c - h + 1) // 2 if c > h else 0]
                x = torch.nn.functional.pad(x, pad)
                h, w = x.shape[2:]
            top, left = int((h - c) / 2.0), int((w - c) / 2.0)
            x = x[:, :, top:top + c, left:left + c]
        if self.do_normalize:
            scale = self.rescale_factor if self.do_rescale else 1.0
            mean = torch.tensor(self.image_mean).view(1, 3, 1, 1) * (1.0 / scale)
            std = torch.tensor(self.image_std).view(1, 3, 1, 1) * (1.0 / scale)
            x = (x - mean) / std
        elif self.do_rescale:
            x = x * self.rescale_factor
        return x[0].numpy().astype(np.float32)


def clip_times(duration: float, n_frames: int, clip_s: float = 4.0, hz: float = 2.0) -> np.ndarray:
    """(n, n_frames) frame times in seconds from the chunk start, n = round(hz * duration)."""
    n = max(1, int(round(duration * hz)))
    t = np.linspace(0.0, duration, n + 1)[1:]
    back = np.arange(n_frames - 1, -1, -1) * (clip_s / n_frames)
    return np.maximum(t[:, None] - back[None, :], 0.0)


class VideoExtractor(ModelExtractor):
    modality = "video"
    config_class = VideoConfig
    event_types = ("Video",)

    def load(self):
        if self._model is not None:
            return
        path, model = self._load_model()
        cfg = model.config
        self.preprocessor = VideoPreprocessor.from_pretrained(path, getattr(cfg, "crop_size", None))
        self.n_frames = int(self.config.frames_per_clip or getattr(cfg, "frames_per_clip", 64))
        self.n_states = int(cfg.num_hidden_layers) + 1
        self.dim = int(cfg.hidden_size)
        self.n_layers = len(layer_indices(self.n_states, self.config.layers, self.config.aggregation,
                                                self.config.cache_n_layers))

    def meta(self) -> dict:
        self.load()
        return {"model_id": str(self.config.model_id), "layer_fractions": list(self.config.layers),
                "aggregation": self.config.aggregation,
                "layer_indices": layer_indices(self.n_states, self.config.layers, self.config.aggregation,
                                                self.config.cache_n_layers),
                "n_hidden_states": self.n_states, "frames_per_clip": self.n_frames, "clip_s": self.config.clip_s,
                "crop_size": self.preprocessor.crop_size}

    def chunks(self, events: pd.DataFrame):
        return media_chunks(events, "Video", self.config.chunk_s, self.config.min_chunk_s)

    def n_units(self, events: pd.DataFrame) -> int:
        return sum(max(1, int(round(d * 2))) for *_, d in self.chunks(events))

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """(B, F, 3, crop, crop) preprocessed clips -> (B, L, D) float32 (token-averaged hidden states)."""
        self.load()
        torch = self._torch
        x = torch.from_numpy(clips).to(self.device, self.dtype)
        with torch.inference_mode():
            hs = self._model(pixel_values_videos=x, output_hidden_states=True).hidden_states
        states = torch.stack([h.float().mean(1) for h in hs], 1)  # (B, N, D)
        return np.stack([select_layers(s, self.config.layers, self.config.aggregation,
                                                       self.config.cache_n_layers).cpu().numpy()
                         for s in states])

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0) -> np.ndarray | None:
        chunks = self.chunks(events)
        if not chunks:
            return None
        self.load()
        grid = np.zeros((n_steps, self.n_layers, self.dim), np.float32)
        bs = max(1, self.config.batch_size)
        for path, start, offset, dur in chunks:
            times = clip_times(dur, self.n_frames, self.config.clip_s, hz)
            k0 = int(round(start * hz))
            for lo in range(0, len(times), bs):
                block = times[lo: lo + bs]
                frames = read_video_frames(path, (block + offset).reshape(-1), transform=self.preprocessor)
                clips = frames.reshape(len(block), self.n_frames, *frames.shape[1:])
                vecs = self.embed_clips(clips)
                for j, v in enumerate(vecs):
                    k = k0 + lo + j
                    if 0 <= k < n_steps:
                        grid[k] += v
                if progress is not None:
                    progress(len(block))
        return grid
