"""Video features: V-JEPA 2 clip embeddings at 2 Hz (TRIBE v2's video extractor, neuralset 0.0.2's
``HuggingFaceVideo``).

For each Video event, cut into chunks as TRIBE's ChunkEvents (``layers.chunk_spans``), each chunk of
duration d gives n = round(2 d) time points t_k = linspace(0, d, n + 1)[1:] (the right edges of the 2 Hz
bins). Time point k is the clip of F = ``frames_per_clip`` frames (the model config's, 64 for the
released model) shown at max(0, t_k - (j / F) * clip_s) for j = F - 1 .. 0 (``clip_s`` = 4 s), read as
the release reads them with moviepy: the frame on screen at that time (:func:`decode.read_video_frames`),
and, for a time at or after the end of the last frame, the frame returned for the time before it (moviepy
answers a read past the end with its last read frame). Frames whose longer side exceeds ``max_imsize``
(when set) are first shrunk with PIL's default (bicubic) resize to ``int(side / factor)``. Each clip is
preprocessed (:class:`VideoPreprocessor`), run through the model with ``output_hidden_states``, each hidden
state reduced over its tokens (``token_aggregation``, in the model's dtype, then float32) -> (N, D) ->
chosen layers (L, D), added to row round(2 * chunk start) + k.

:class:`VideoPreprocessor` is the transformers ``VJEPA2VideoProcessor`` computation (that class needs
torchvision), with the values read from the model directory's ``video_preprocessor_config.json``
(or ``preprocessor_config.json``):

1. resize with antialiased bilinear interpolation (half-pixel centres) so that the shorter edge is
   ``int(crop_size * 256 / 224)`` and the longer ``int(shorter_target * long / short)``, uint8 to uint8 as
   torchvision's ``resize`` does it on a CPU (:func:`resize_uint8`);
2. center crop ``crop_size``: top = int((H - crop) / 2), left = int((W - crop) / 2);
3. rescale by ``rescale_factor`` (1/255) and normalise: (x * rescale - mean) / std per channel
   (ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) unless the JSON says otherwise).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd

from nforge_jax.extract.audio import MediaExtractor
from nforge_jax.extract.hidden_states import aggregate_tokens, layer_indices, select_layers
from nforge_jax.extract.decode import VideoFrameReader, prefetch

__all__ = ["VideoConfig", "VideoExtractor", "VideoPreprocessor", "auto_clip_batch", "clip_times", "resize_uint8", "shrink_frame"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    model_id: str = "facebook/vjepa2-vitg-fpc64-256"
    layers: tuple[float, ...] = (0.75, 1.0)
    aggregation: str = "cat"
    cache_n_layers: int | None = None  # keep K evenly spaced hidden states first (layers.kept_states)
    token_aggregation: str = "mean"  # over a clip's tokens: mean | sum | max | first | last
    clip_s: float = 4.0
    frames_per_clip: int | None = None  # None: the model config's frames_per_clip
    max_imsize: int | None = None  # frames with a longer side above this are shrunk first (PIL); release: None
    batch_size: int | None = None  # clips per forward; None: as many as fit the device (auto_clip_batch)
    chunk_s: float = 60.0
    min_chunk_s: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation, self.cache_n_layers)
        aggregate_tokens(None, self.token_aggregation)  # validates
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ValueError(f"video batch_size: expected an integer >= 1 or null (fill the device), got {self.batch_size!r}")
        if self.max_imsize is not None and not self.max_imsize >= 1:
            raise ValueError(f"max_imsize: expected a positive integer or null, got {self.max_imsize!r}")


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

        # (1, 3, H, W) contiguous uint8, the layout the processor hands to torchvision
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).contiguous()[None]
        if self.do_resize:
            x = resize_uint8(x, self.resize_shape(x.shape[2], x.shape[3]))
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
        x = x.float()
        if self.do_normalize:  # the processor fuses the rescale into mean and std
            scale = self.rescale_factor if self.do_rescale else 1.0
            mean = torch.tensor(self.image_mean).view(1, 3, 1, 1) * (1.0 / scale)
            std = torch.tensor(self.image_std).view(1, 3, 1, 1) * (1.0 / scale)
            x = (x - mean) / std
        elif self.do_rescale:
            x = x * self.rescale_factor
        return x[0].numpy().astype(np.float32)


def resize_uint8(x, size: tuple[int, int]):
    """(B, C, H, W) uint8 tensor -> (B, C, h, w) uint8, as torchvision 0.28's ``resize`` (antialiased
    bilinear) does it on a CPU: torch's own uint8 kernel (fixed-point weights) where torchvision uses it
    (x86 with AVX2 / AVX512, ARM), else float32 interpolation rounded to uint8. Same size: unchanged."""
    import platform

    import torch

    if tuple(size) == tuple(x.shape[-2:]):
        return x
    native = (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
              or platform.machine() in ("aarch64", "arm64"))
    kw = dict(size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    if native:
        return torch.nn.functional.interpolate(x, **kw)
    return torch.nn.functional.interpolate(x.float(), **kw).round_().to(torch.uint8)


def shrink_frame(frame: np.ndarray, max_imsize: int | None) -> np.ndarray:
    """The release's ``max_imsize``: a frame whose longer side exceeds it becomes
    ``int(side / factor)`` per side (factor = longer side / max_imsize), with PIL's default resize (bicubic)."""
    if max_imsize is None:
        return frame
    factor = max(frame.shape[:2]) / max_imsize
    if factor <= 1:
        return frame
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("VideoConfig.max_imsize needs Pillow (pip install pillow)") from exc
    size = (int(frame.shape[1] / factor), int(frame.shape[0] / factor))  # PIL's (width, height)
    return np.array(Image.fromarray(frame).resize(size))


MAX_AUTO_CLIPS = 32  # beyond this a bigger forward gains little (tiny model, 2-core CPU: 8 clips 1.24 s, 20 1.09 s)
CPU_BUDGET_BYTES = 2 << 30  # host memory a CPU forward may take; a GPU gets half of what is free on it


def auto_clip_batch(model_config, n_frames: int, itemsize: int, free_bytes: int) -> int:
    """Clips per forward that fit ``free_bytes``: per clip, every hidden state of every token (kept for the
    layer read-out) twice over (the layer's own working memory) plus the clip's preprocessed frames twice (one
    block decoded ahead); between 1 and MAX_AUTO_CLIPS."""
    crop, patch = int(getattr(model_config, "crop_size", 256)), int(getattr(model_config, "patch_size", 16))
    tubelet = int(getattr(model_config, "tubelet_size", 2))
    tokens = max(1, n_frames // tubelet) * max(1, crop // patch) ** 2
    states = (int(model_config.num_hidden_layers) + 1) * tokens * int(model_config.hidden_size) * itemsize
    frames = n_frames * 3 * crop * crop * 4
    return int(min(MAX_AUTO_CLIPS, max(1, free_bytes // (2 * states + 2 * frames))))


def clip_times(duration: float, n_frames: int, clip_s: float = 4.0, hz: float = 2.0) -> np.ndarray:
    """(n, n_frames) frame times in seconds from the chunk start, n = round(hz * duration)."""
    n = max(1, int(round(duration * hz)))
    t = np.linspace(0.0, duration, n + 1)[1:]
    back = np.arange(n_frames - 1, -1, -1) / n_frames * clip_s  # (j / F) * clip_s, the release's operation order
    return np.maximum(t[:, None] - back[None, :], 0.0)


class VideoExtractor(MediaExtractor):
    modality = "video"
    config_class = VideoConfig
    event_types = ("Video",)

    def on_load(self, path, model):
        cfg = model.config
        self.preprocessor = VideoPreprocessor.from_pretrained(path, getattr(cfg, "crop_size", None))
        self.n_frames = int(self.config.frames_per_clip or getattr(cfg, "frames_per_clip", 64))
        # the encoder's hidden states do not depend on the predictor; skip it where the model allows
        params = inspect.signature(model.forward).parameters
        self._forward_kw = {"skip_predictor": True} if "skip_predictor" in params else {}
        self.decode_counts = {"clips": 0, "frames_decoded": 0, "frames_preprocessed": 0}
        self.clip_batch = self.config.batch_size or auto_clip_batch(
            cfg, self.n_frames, model.dtype.itemsize, self._free_bytes())

    def _free_bytes(self) -> int:
        if self.device.type == "cuda":
            return self._torch.cuda.mem_get_info(self.device)[0] // 2
        return CPU_BUDGET_BYTES

    def meta_extra(self) -> dict:
        return {"frames_per_clip": self.n_frames, "clip_s": self.config.clip_s, "crop_size": self.preprocessor.crop_size,
                "token_aggregation": self.config.token_aggregation, "cache_n_layers": self.config.cache_n_layers,
                "max_imsize": self.config.max_imsize}

    def n_units(self, events: pd.DataFrame) -> int:
        return sum(max(1, int(round(d * 2))) for *_, d in self.chunks(events))

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """(B, F, 3, crop, crop) preprocessed clips -> (B, L, D) float32 (token-reduced hidden states)."""
        self.load()
        torch = self._torch
        x = torch.from_numpy(clips).to(self.device, self.dtype)
        with torch.inference_mode():
            hs = self._model(pixel_values_videos=x, output_hidden_states=True, **self._forward_kw).hidden_states
        # reduced in the states' dtype, then float32, as the release (bfloat16 states are reduced in bfloat16)
        states = torch.stack([aggregate_tokens(h, self.config.token_aggregation).float() for h in hs], 1)  # (B, N, D)
        return np.stack([select_layers(s, self.config.layers, self.config.aggregation,
                                       self.config.cache_n_layers).cpu().numpy() for s in states])

    def read_clips(self, path, times: np.ndarray, before: np.ndarray | None = None,
                   reader: VideoFrameReader | None = None) -> np.ndarray:
        """(B, F) frame times in the file -> (B, F, 3, crop, crop) preprocessed frames, as the release reads
        them (times in the order moviepy is asked: clip by clip, oldest frame first). ``before``: the
        preprocessed frame of the time asked just before these (the previous block of the same chunk).
        ``reader``: the chunk's :class:`VideoFrameReader` (each frame decoded once for all its clips); without
        one, the frames are decoded for these clips alone."""
        if reader is None:
            with self.frame_reader(path) as own:
                return self.read_clips(path, times, before, own)
        frames, past_end = reader.read(times.reshape(-1))
        frames = frames.copy()  # the reader's cache is shared with later clips
        # Kept on purpose: moviepy answers a time at or after the end of the last frame with the frame it read
        # last, i.e. the one of the time asked before (not the file's last frame when frames were skipped).
        for i in np.flatnonzero(past_end):
            if i > 0:
                frames[i] = frames[i - 1]
            elif before is not None:
                frames[i] = before
        return frames.reshape(*times.shape, *frames.shape[1:])

    def frame_reader(self, path) -> VideoFrameReader:
        pre, max_imsize = self.preprocessor, self.config.max_imsize
        return VideoFrameReader(path, transform=lambda f: pre(shrink_frame(f, max_imsize)))

    def _clip_blocks(self, path, times: np.ndarray, bs: int):
        """Yield (first row, preprocessed clips) of each block of ``bs`` clips of one chunk, read forward by
        one reader (each chunk is a fresh reader in the release); counts frames into ``self.decode_counts``."""
        last = None
        with self.frame_reader(path) as reader:
            for lo in range(0, len(times), bs):
                clips = self.read_clips(path, times[lo: lo + bs], last, reader)
                last = clips[-1, -1]
                yield lo, clips
            counts = self.decode_counts
            counts["clips"] += len(times)
            counts["frames_decoded"] += reader.n_decoded
            counts["frames_preprocessed"] += reader.n_transformed

    def chunk_rows(self, path, offset, dur, hz, progress):
        times = clip_times(dur, self.n_frames, self.config.clip_s, hz) + offset
        rows = np.zeros((len(times), self.n_layers, self.dim), np.float32)
        # decoding and preprocessing the next block run in a thread while the model embeds this one
        for lo, clips in prefetch(self._clip_blocks(path, times, self.clip_batch)):
            rows[lo: lo + len(clips)] = self.embed_clips(clips)
            if progress is not None:
                progress(len(clips))
        return rows
