"""Audio features: Wav2Vec-BERT 2.0 hidden states at 2 Hz (TRIBE v2's audio extractor).

For each Audio event of a timeline, cut into chunks as TRIBE's ChunkEvents (60 s pieces, the last one
30-90 s; ``layers.chunk_spans``), each chunk:

1. decoded with PyAV from ``filepath`` at ``offset + chunk offset`` (a video's sound track works too),
   mono, resampled to the feature extractor's rate (16 kHz), z-scored;
2. the model's own feature extractor (``AutoFeatureExtractor``), one forward with ``output_hidden_states``;
3. hidden states (N, frames, D) -> chosen layers (L, frames, D) -> resized to ``round(2 * duration)``
   samples with nearest interpolation (``torch.nn.functional.interpolate``, mode "nearest": sample i
   takes frame ``floor(i * frames / n)``) and added to the 2 Hz rows from ``round(2 * chunk start)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from nforge_jax.extract.layers import ModelExtractor, chunk_spans, layer_indices, select_layers
from nforge_jax.extract.media import read_audio

__all__ = ["AudioConfig", "AudioExtractor"]


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    model_id: str = "facebook/w2v-bert-2.0"
    layers: tuple[float, ...] = (0.75, 1.0)
    aggregation: str = "cat"
    chunk_s: float = 60.0
    min_chunk_s: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation)


def media_chunks(events: pd.DataFrame, kind: str, max_s: float, min_s: float) -> list[tuple[str, float, float, float]]:
    """(filepath, timeline start, file offset, duration) of every chunk of the ``kind`` events."""
    out = []
    rows = events[events["type"] == kind]
    if rows.empty:
        return out
    offsets = rows["offset"] if "offset" in rows.columns else pd.Series(0.0, index=rows.index)
    for path, start, dur, off in zip(rows["filepath"], rows["start"], rows["duration"], offsets.fillna(0.0)):
        if not dur > 0:
            raise ValueError(f"{path}: {kind} event at {start} s has duration {dur}; expected > 0 "
                             "(probe the file for its duration)")
        for c_off, c_dur in chunk_spans(float(dur), max_s, min_s):
            out.append((str(path), float(start) + c_off, float(off) + c_off, c_dur))
    return out


class AudioExtractor(ModelExtractor):
    modality = "audio"
    config_class = AudioConfig
    event_types = ("Audio",)

    def load(self):
        if self._model is not None:
            return
        from transformers import AutoFeatureExtractor

        path, model = self._load_model()
        self.processor = AutoFeatureExtractor.from_pretrained(path)
        self.sample_rate = int(getattr(self.processor, "sampling_rate", 16000))
        self.n_states = int(model.config.num_hidden_layers) + 1
        self.dim = int(model.config.hidden_size)
        self.n_layers = len(layer_indices(self.n_states, self.config.layers, self.config.aggregation))

    def meta(self) -> dict:
        self.load()
        return {"model_id": str(self.config.model_id), "layer_fractions": list(self.config.layers),
                "aggregation": self.config.aggregation,
                "layer_indices": layer_indices(self.n_states, self.config.layers, self.config.aggregation),
                "n_hidden_states": self.n_states, "sample_rate": self.sample_rate, "chunk_s": self.config.chunk_s}

    def chunks(self, events: pd.DataFrame):
        return media_chunks(events, "Audio", self.config.chunk_s, self.config.min_chunk_s)

    def n_units(self, events: pd.DataFrame) -> int:
        return len(self.chunks(events))

    def embed_chunk(self, wav: np.ndarray, n_out: int) -> np.ndarray:
        """Mono samples at ``sample_rate`` -> (n_out, L, D) float32."""
        self.load()
        torch = self._torch
        wav = np.asarray(wav, np.float32)
        wav = (wav - wav.mean()) / max(float(wav.std()), 1e-8)
        inputs = self.processor(wav, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            hs = self._model(**inputs, output_hidden_states=True).hidden_states
        states = torch.stack(hs, 0)[:, 0].float()  # (N, frames, D)
        sel = select_layers(states, self.config.layers, self.config.aggregation)  # (L, frames, D)
        resized = torch.nn.functional.interpolate(sel.transpose(1, 2), size=n_out, mode="nearest")  # (L, D, n)
        return resized.permute(2, 0, 1).cpu().numpy()

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0) -> np.ndarray | None:
        chunks = self.chunks(events)
        if not chunks:
            return None
        self.load()
        grid = None
        for path, start, offset, dur in chunks:
            wav, _ = read_audio(path, self.sample_rate, start=offset, duration=dur)
            n = max(1, int(round(dur * hz)))
            feats = self.embed_chunk(wav, n)
            if grid is None:
                grid = np.zeros((n_steps, *feats.shape[1:]), np.float32)
            k0 = int(round(start * hz))
            a, b = max(k0, 0), min(k0 + n, n_steps)
            if b > a:
                grid[a:b] += feats[a - k0: b - k0]
            if progress is not None:
                progress(1)
        return grid
