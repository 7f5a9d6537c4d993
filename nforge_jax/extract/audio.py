"""Audio features: Wav2Vec-BERT 2.0 hidden states at 2 Hz (TRIBE v2's audio extractor).

The rule is the release's (neuralset 0.0.2 ``Wav2VecBert``; TRIBEV2_SPEC D.2). For each Audio event of a
timeline, cut into chunks as TRIBE's ChunkEvents (60 s pieces, the last one 30-90 s; ``layers.chunk_spans``),
each chunk:

1. decoded with PyAV from ``filepath``: samples [round(rate * offset), + round(rate * duration)) at the
   file's own rate (a video's sound track works too), every channel resampled to the feature extractor's
   rate (16 kHz) with ``julius`` (the release's resampler), then averaged to mono;
2. ``norm_audio``: ``(x - mean) / (1e-8 + std)`` with the unbiased std (torch's);
3. the model's own feature extractor; the model is called with the input features only -- no attention
   mask, as the release (it matters for chunks with an odd number of fbank frames);
4. hidden states (N, frames, D) -> resized to ``round(2 * duration)`` rows with nearest interpolation
   (``torch.nn.functional.interpolate``: row i takes frame ``floor(i * frames / n)``) -> layers grouped
   over all N states (the release's ``cache_n_layers`` is a no-op for audio: its path never subselects);
5. added to the 2 Hz grid by TRIBE's window overlap rule (``layers.place_rows``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from nforge_jax.extract.hidden_states import layer_indices, select_layers
from nforge_jax.extract.models import ModelExtractor
from nforge_jax.extract.placement import chunk_spans, place_rows
from nforge_jax.extract.decode import prefetch, read_audio

__all__ = ["AudioConfig", "AudioExtractor"]


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    model_id: str = "facebook/w2v-bert-2.0"
    layers: tuple[float, ...] = (0.75, 1.0)
    aggregation: str = "cat"
    norm_audio: bool = True  # z-score each chunk's waveform
    batch_size: int = 1  # chunks of the same length per forward (no padding, so features do not change)
    chunk_s: float = 60.0
    min_chunk_s: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {self.batch_size!r}")


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


class MediaExtractor(ModelExtractor):
    """What the audio and video extractors share: each event of ``event_types`` cut into chunks of its media
    file (``chunk_s``, ``min_chunk_s``), each chunk's rows placed on the timeline's grid."""

    def chunks(self, events: pd.DataFrame):
        return media_chunks(events, self.event_types[0], self.config.chunk_s, self.config.min_chunk_s)

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0, origin: float = 0.0) -> np.ndarray | None:
        """(n_steps, L, D) float32 for one timeline's events; None when it has none of ``event_types``.
        ``origin``: where the timeline's 100 s windows start (its earliest event)."""
        chunks = self.chunks(events)
        if not chunks:
            return None
        self.load()
        grid = np.zeros((n_steps, self.n_layers, self.dim), np.float32)
        for path, start, offset, dur in chunks:
            place_rows(grid, self.chunk_rows(path, offset, dur, hz, progress), start, hz, origin)
        return grid

    def chunk_rows(self, path: str, offset: float, dur: float, hz: float,
                   progress: Callable[[int], None] | None) -> np.ndarray:
        """(rows at ``hz``, L, D) float32 of ``dur`` s of the file from ``offset``; reports its units to progress."""
        raise NotImplementedError


class AudioExtractor(MediaExtractor):
    modality = "audio"
    config_class = AudioConfig
    event_types = ("Audio",)

    def on_load(self, path, model):
        from transformers import AutoFeatureExtractor

        self.processor = AutoFeatureExtractor.from_pretrained(path)
        self.sample_rate = int(getattr(self.processor, "sampling_rate", 16000))

    def meta_extra(self) -> dict:
        return {"sample_rate": self.sample_rate, "chunk_s": self.config.chunk_s}

    def n_units(self, events: pd.DataFrame) -> int:
        return len(self.chunks(events))

    def input_features(self, wav: np.ndarray, rate: float):
        """(channels, n) samples at ``rate`` Hz -> the model's (1, frames, bins) input features: resampled to the
        extractor's rate (julius), averaged to mono, z-scored (``norm_audio``), through the feature extractor."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(wav, np.float32))
        if int(rate) != self.sample_rate:
            import julius

            if not float(rate).is_integer():
                raise ValueError(f"audio sample rate {rate} Hz: expected an integer rate")
            x = julius.resample.ResampleFrac(old_sr=int(rate), new_sr=self.sample_rate)(x)
        x = x.mean(0)
        if self.config.norm_audio:
            x = (x - x.mean()) / (1e-8 + x.std())
        return self.processor(x, return_tensors="pt", sampling_rate=self.sample_rate)["input_features"]

    def embed_features(self, features, n_out: int) -> np.ndarray:
        """(B, frames, bins) input features of chunks of one length -> (B, n_out, L, D) float32."""
        torch = self._torch
        with torch.inference_mode():
            hs = self._model(features.to(self.device, self.dtype), output_hidden_states=True).hidden_states
        out = []
        for b in range(features.shape[0]):
            states = torch.stack([h[b] for h in hs], 0).float().transpose(1, 2)  # (N, D, frames)
            if states.shape[-1] != n_out:
                states = torch.nn.functional.interpolate(states, size=n_out, mode="nearest")
            sel = select_layers(states, self.config.layers, self.config.aggregation)  # (L, D, n)
            out.append(sel.permute(2, 0, 1).cpu().numpy())
        return np.stack(out)

    def embed_chunk(self, wav: np.ndarray, rate: float, n_out: int) -> np.ndarray:
        """(channels, n) samples at ``rate`` Hz -> (n_out, L, D) float32."""
        self.load()
        return self.embed_features(self.input_features(wav, rate), n_out)[0]

    def _prepared(self, chunks, hz: float):
        """(timeline start, rows, input features) of each chunk, decoded in order."""
        for path, start, offset, dur in chunks:
            wav, rate = read_audio(path, None, start=offset, duration=dur, mono=False)
            yield start, max(1, int(round(dur * hz))), self.input_features(wav, rate)

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0, origin: float = 0.0) -> np.ndarray | None:
        """As :meth:`MediaExtractor.extract`; up to ``batch_size`` consecutive chunks of the same length go
        through the model together, and the next chunk is decoded in a thread while the model runs."""
        chunks = self.chunks(events)
        if not chunks:
            return None
        self.load()
        grid = np.zeros((n_steps, self.n_layers, self.dim), np.float32)
        group: list = []

        def flush():
            rows = self.embed_features(self._torch.cat([f for *_, f in group]), group[0][1])
            for (start, *_), r in zip(group, rows):
                place_rows(grid, r, start, hz, origin)
            if progress is not None:
                progress(len(group))
            group.clear()

        for item in prefetch(self._prepared(chunks, hz)):
            if group and (item[1] != group[0][1] or item[2].shape != group[0][2].shape):
                flush()
            group.append(item)
            if len(group) >= self.config.batch_size:
                flush()
        if group:
            flush()
        return grid
