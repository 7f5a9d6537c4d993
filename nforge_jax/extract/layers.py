"""Choosing hidden states by depth, placing vectors on the 2 Hz grid, chunking long media, loading models.

Layer choice follows TRIBE v2's extractors (neuralset 0.0.2, TRIBEV2_SPEC D.2). With N hidden states
(embedding output included):

1. ``cache_n_layers = K`` (optional): first keep only the K states ``round(linspace(0, N - 1, K))`` and
   work on that subset from here on (the release sets K = 20 for text and video; for Llama-3.2-3B's 29
   states the release's groups are therefore {13, 15, 16, 18, 19} and {21, 22, 24, 25, 27, 28});
2. a fraction f picks index ``int(f * (n - 1))`` of the (kept) n states;
3. aggregation:

- ``"cat"``: one hidden state per fraction, in the given order -> (len(fractions), ...).
- ``"group_mean"``: indices i_k de-duplicated and sorted, the last one + 1; group g is the mean of
  states[i_g : i_{g+1}] -> (len(unique indices) - 1, ...). TRIBE v2's release uses [0.5, 0.75, 1.0].
- ``"mean"`` / ``"sum"``: the mean / sum of the de-duplicated indices -> (1, ...).

:func:`layer_indices` always answers in indices of the full stack of N states.

Placement on the grid (TRIBE's "sum" aggregation): row k of a timeline's feature array covers
[k / hz, (k + 1) / hz) of timeline time; an event starting at ``start`` lasting ``duration`` adds its
vector to rows ``round(hz * start)`` .. ``+ max(1, round(hz * duration)) - 1`` (Python round).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nforge_jax.data.timebase import WINDOW_S  # TRIBE v2's segments: 100 TRs of 1 s

__all__ = ["AGGREGATIONS", "TOKEN_AGGREGATIONS", "aggregate_tokens", "kept_states", "layer_indices", "select_layers", "n_output_layers", "WINDOW_S", "place", "place_rows",
           "chunk_spans",
           "resolve_model", "ModelNotAvailable", "torch_device", "torch_dtype"]

AGGREGATIONS = ("cat", "group_mean", "mean", "sum")


class ModelNotAvailable(FileNotFoundError):
    """A model id is neither a local directory nor in the local Hugging Face cache (a user's error to fix:
    the message says how)."""


def _check(fractions: Sequence[float], aggregation: str) -> tuple[float, ...]:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"layer aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"layer fractions: expected a non-empty list of numbers in [0, 1], got {list(fractions)}")
    if aggregation == "group_mean" and (len(fractions) < 2 or list(fractions) != sorted(fractions)):
        raise ValueError(f"layer fractions for 'group_mean': expected >= 2 increasing boundaries, got {list(fractions)}")
    return fractions


def kept_states(n_states: int, cache_n_layers: int | None = None) -> list[int]:
    """The hidden states a ``cache_n_layers`` setting keeps: ``round(linspace(0, N - 1, K))`` (all when unset
    or K >= N), as neuralset's ``_layer_subselection``."""
    if cache_n_layers is None or cache_n_layers >= n_states:
        return list(range(n_states))
    if cache_n_layers < 2:
        raise ValueError(f"cache_n_layers: expected an integer >= 2 or null, got {cache_n_layers}")
    return [int(round(x)) for x in np.linspace(0, n_states - 1, cache_n_layers)]


def layer_indices(n_states: int, fractions: Sequence[float], aggregation: str = "cat",
                  cache_n_layers: int | None = None) -> list:
    """Indices into the full stack of ``n_states``: 'cat', a list of indices; the others, a list of groups
    (each a list of the indices averaged, or summed for 'sum')."""
    fractions = _check(fractions, aggregation)
    kept = kept_states(n_states, cache_n_layers)
    n = len(kept)
    idx = [int(f * (n - 1)) for f in fractions]
    if aggregation == "cat":
        return [kept[i] for i in idx]
    uniq = sorted(set(idx))
    if aggregation in ("mean", "sum"):
        return [[kept[i] for i in uniq]]
    if len(uniq) < 2:
        raise ValueError(f"layer fractions {list(fractions)} give a single index {uniq} of {n} hidden "
                         "states: 'group_mean' needs at least two distinct boundaries")
    uniq[-1] += 1
    return [kept[uniq[g]: uniq[g + 1]] for g in range(len(uniq) - 1)]


def n_output_layers(n_states: int, fractions: Sequence[float], aggregation: str = "cat",
                    cache_n_layers: int | None = None) -> int:
    return len(layer_indices(n_states, fractions, aggregation, cache_n_layers))


def select_layers(states, fractions: Sequence[float], aggregation: str = "cat", cache_n_layers: int | None = None):
    """states: (N, ...) stack of hidden states (numpy or torch) -> (L, ...)."""
    sel = layer_indices(states.shape[0], fractions, aggregation, cache_n_layers)
    if aggregation == "cat":
        return states[list(sel)]
    parts = [states[list(group)].sum(0) if aggregation == "sum" else states[list(group)].mean(0) for group in sel]
    if isinstance(states, np.ndarray):
        return np.stack(parts)
    import torch

    return torch.stack(parts)


TOKEN_AGGREGATIONS = ("mean", "sum", "max", "first", "last")


def aggregate_tokens(states, how: str = "mean"):
    """(K, tokens, ...) -> (K, ...): the token axis (axis 1) reduced as the release's extractors do.
    ``states=None`` only validates ``how``."""
    if how not in TOKEN_AGGREGATIONS:
        raise ValueError(f"token aggregation: expected one of {TOKEN_AGGREGATIONS}, got {how!r}")
    if states is None:
        return None
    if how == "first":
        return states[:, 0]
    if how == "last":
        return states[:, -1]
    if how == "max":
        out = states.max(1)
        return getattr(out, "values", out)  # torch returns (values, indices)
    return states.mean(1) if how == "mean" else states.sum(1)




def _overlap(a_start: float, a_rows: int | None, a_dur: float, b_start: float, b_dur: float, hz: float):
    """Rows of array A (``a_rows`` rows at ``hz`` from ``a_start``; None for a static event lasting ``a_dur``)
    that overlap [b_start, b_start + b_dur): (first row, n rows), or None.

    TRIBE's rule (neuralset 0.0.2, TimedArray overlap): first row round(hz * (overlap start - a_start)),
    n = max(1, round(hz * overlap duration)), moved back so that it ends inside A; spans that only touch
    do not overlap unless one of them lasts 0 s.
    """
    lo, hi = max(b_start, a_start), min(b_start + b_dur, a_start + a_dur)
    if hi < lo or (hi == lo and a_dur and b_dur):
        return None
    if a_rows is None:
        return lo, hi
    if not a_dur:
        return None
    first, n = int(round(hz * (lo - a_start))), max(1, int(round(hz * (hi - lo))))
    return min(first, a_rows - n), n


def _windows(start: float, stop: float, origin: float, window_s: float):
    """Starts of the windows (origin + k * window_s) that [start, stop] can touch."""
    k0 = int(np.floor((start - origin) / window_s)) - 1
    k1 = int(np.floor((stop - origin) / window_s)) + 1
    return [origin + k * window_s for k in range(max(k0, 0), k1 + 1)]


def place(grid: np.ndarray, start: float, duration: float, vector: np.ndarray, hz: float = 2.0,
          origin: float = 0.0, window_s: float = WINDOW_S) -> None:
    """Add a static event's ``vector`` (a word) where TRIBE v2 puts it: in each ``window_s`` window from
    ``origin`` that the event overlaps, rows round(hz * (overlap start - window start)) ..
    + max(1, round(hz * overlap duration)) - 1, kept inside the window. Grid row of window row i:
    round(hz * origin) + round(hz * window_s) * k + i. Rows past the grid are dropped."""
    w_rows, base = int(round(hz * window_s)), int(round(hz * origin))
    for k, w in enumerate(_windows(start, start + duration, origin, window_s)):
        ov = _overlap(w, w_rows, window_s, start, duration, hz)
        if ov is None:
            continue
        first, n = ov
        a = base + int(round((w - origin) / window_s)) * w_rows + first
        lo, hi = max(a, 0), min(a + n, grid.shape[0])
        if hi > lo:
            grid[lo:hi] += vector


def place_rows(grid: np.ndarray, rows: np.ndarray, start: float, hz: float = 2.0, origin: float = 0.0,
               window_s: float = WINDOW_S) -> None:
    """Add a time series sampled at ``hz`` from ``start`` (an audio or video chunk's rows) where TRIBE v2
    puts it: cut by the ``window_s`` windows from ``origin``, each piece matched to window rows by the
    overlap rule on both sides (as ``place``)."""
    n_rows = rows.shape[0]
    w_rows, base = int(round(hz * window_s)), int(round(hz * origin))
    duration = n_rows / hz
    for w in _windows(start, start + duration, origin, window_s):
        piece = _overlap(start, n_rows, duration, w, window_s, hz)  # rows of the series inside the window
        if piece is None:
            continue
        p0, n = piece
        p_start, p_dur = start + p0 / hz, n / hz
        dst = _overlap(w, w_rows, window_s, p_start, p_dur, hz)
        src = _overlap(p_start, n, p_dur, w, window_s, hz)
        if dst is None or src is None:
            continue
        a = base + int(round((w - origin) / window_s)) * w_rows + dst[0]
        lo, hi = max(a, 0), min(a + dst[1], grid.shape[0])
        if hi > lo:
            grid[lo:hi] += rows[p0 + src[0] + (lo - a): p0 + src[0] + (hi - a)]


def chunk_spans(duration: float, max_s: float = 60.0, min_s: float = 30.0) -> list[tuple[float, float]]:
    """(offset, length) pieces of a span, as TRIBE's ChunkEvents: cuts every ``max_s`` from the start, a
    cut dropped when a piece would be shorter than ``min_s`` (so the last piece is min_s .. max_s + min_s)."""
    if duration <= 0:
        return [(0.0, float(duration))]
    eps = 1e-9
    cuts = [max_s * k for k in range(1, int(duration // max_s) + 1) if max_s * k < duration - eps]
    while cuts and duration - cuts[-1] < min_s - eps:
        cuts.pop()
    bounds = [0.0, *cuts, float(duration)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]


def resolve_model(model_id: str | os.PathLike, what: str) -> Path:
    """A local directory, or the snapshot of a hub id already in the local Hugging Face cache.

    Never downloads. ModelNotAvailable says how to get it otherwise.
    """
    path = Path(model_id)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(f"{path}: no config.json; expected a directory written by save_pretrained "
                                    f"for the {what} model")
        return path
    text = str(model_id)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ModelNotAvailable(f"{what} model {text!r}: no such directory, and not a hub id of the form 'org/name'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, local_files_only=True))
    except Exception as exc:
        raise ModelNotAvailable(
            f"{what} model {text!r} is not in the local Hugging Face cache ({type(exc).__name__}). Fetch it on a "
            f"machine with network access with `hf download {text}` (it goes to the standard cache, "
            f"$HF_HOME/hub), or save it anywhere with `save_pretrained` and pass that directory instead.") from None


def torch_device(device: str = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(dtype: str, device):
    """"auto": bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on CPU."""
    import torch

    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype: expected 'auto' or one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


class ModelExtractor:
    """What the text, audio and video extractors share: their config, the device/dtype choice, and loading
    the model once, lazily (so building an extractor needs neither torch nor the weights)."""

    modality = ""
    config_class: type = type(None)

    def __init__(self, config=None, device: str = "auto", dtype: str = "auto"):
        self.config = self.config_class() if config is None else config
        self._device_name, self._dtype_name = device, dtype
        self._model = None

    def load(self) -> None:
        """Loads the model once: resolved locally (never downloaded), on the chosen device and dtype, in eval
        mode; then the modality's own set-up (``on_load``). A failed set-up leaves nothing half-loaded."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel

        self._torch = torch  # the extract methods use it without importing torch at module level
        path = resolve_model(self.config.model_id, self.modality)
        self.device = torch_device(self._device_name)
        self.dtype = torch_dtype(self._dtype_name, self.device)
        model = AutoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.n_states = int(model.config.num_hidden_layers) + 1  # the embedding output included
        self.dim = int(model.config.hidden_size)
        self.n_layers = len(self.layer_indices())
        self.on_load(path, model)
        self._model = model

    def on_load(self, path, model) -> None:
        """The modality's set-up once its model is loaded (tokenizer, feature extractor, preprocessor)."""

    def layer_indices(self) -> list:
        """The hidden states each output layer is made of (indices of the full stack)."""
        c = self.config
        return layer_indices(self.n_states, c.layers, c.aggregation, getattr(c, "cache_n_layers", None))

    def meta(self) -> dict:
        """What the store records of this extractor: its settings, the states it used, the modality's extras."""
        self.load()
        return {"model_id": str(self.config.model_id), "layer_fractions": list(self.config.layers),
                "aggregation": self.config.aggregation, "layer_indices": self.layer_indices(),
                "n_hidden_states": self.n_states, **self.meta_extra()}

    def meta_extra(self) -> dict:
        return {}
