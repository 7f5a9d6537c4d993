"""Text features: contextual word embeddings from a causal language model (TRIBE v2: Llama-3.2-3B).

For each Word event of a timeline (in time order):

1. context = the event's ``context`` column when it is a non-empty string ending with the word (what
   :func:`nforge_jax.inference.events.add_context` and TRIBE's AddContextToWords write), else the up to
   ``context_words`` preceding words of the timeline and the word itself, joined by spaces;
2. the context is tokenized (truncated on the left to the model's maximum length), run through the model
   with ``output_hidden_states``; the hidden states of the tokens that overlap the word's characters
   (the end of the context) are averaged -> (N, D);
3. layers chosen by fraction (``layers.py``) -> (L, D), added to the 2 Hz rows the word covers.

Contexts are batched with right padding: with a causal model, padding after a sequence does not change
its hidden states, so batched and one-by-one runs agree.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from nforge_jax.extract.layers import ModelExtractor, layer_indices, place, select_layers

__all__ = ["TextConfig", "TextExtractor", "word_contexts"]


@dataclasses.dataclass(frozen=True)
class TextConfig:
    model_id: str = "meta-llama/Llama-3.2-3B"
    layers: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    aggregation: str = "cat"  # or "group_mean" (TRIBE v2's release: layers (0.5, 0.75, 1.0))
    context_words: int = 1024  # preceding words of context per word
    batch_size: int = 8
    max_tokens: int | None = None  # None: the model's max_position_embeddings

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation, self.cache_n_layers)  # validates


def word_contexts(words: Sequence[str], context_words: int = 1024) -> list[str]:
    """For word i: words[max(0, i - context_words) : i + 1] joined by single spaces."""
    out = []
    for i in range(len(words)):
        out.append(" ".join(w.strip() for w in words[max(0, i - context_words): i + 1]))
    return out


class TextExtractor(ModelExtractor):
    modality = "text"
    config_class = TextConfig
    event_types = ("Word",)

    def load(self):
        if self._model is not None:
            return
        from transformers import AutoTokenizer

        path, model = self._load_model()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.truncation_side = "left"
        cfg = model.config
        self.n_states = int(cfg.num_hidden_layers) + 1
        self.dim = int(cfg.hidden_size)
        limit = self.config.max_tokens or getattr(cfg, "max_position_embeddings", None) or 2048
        self.max_tokens = int(limit)
        self.n_layers = len(layer_indices(self.n_states, self.config.layers, self.config.aggregation,
                                                self.config.cache_n_layers))

    def meta(self) -> dict:
        self.load()
        return {"model_id": str(self.config.model_id), "layer_fractions": list(self.config.layers),
                "aggregation": self.config.aggregation,
                "layer_indices": layer_indices(self.n_states, self.config.layers, self.config.aggregation,
                                                self.config.cache_n_layers),
                "n_hidden_states": self.n_states, "context_words": self.config.context_words}

    def _contexts(self, words: pd.DataFrame) -> list[tuple[str, int]]:
        """(context, char index where the word starts in it) per word."""
        texts = [str(t).strip() for t in words["text"]]
        built = word_contexts(texts, self.config.context_words)
        given = words["context"].tolist() if "context" in words.columns else [None] * len(texts)
        out = []
        for word, ctx, default in zip(texts, given, built):
            if not (isinstance(ctx, str) and ctx.rstrip().endswith(word) and word):
                ctx = default
            ctx = ctx.rstrip()
            out.append((ctx, len(ctx) - len(word)))
        return out

    def embed(self, contexts: Sequence[tuple[str, int]]) -> np.ndarray:
        """(len(contexts), L, D) float32 word vectors."""
        self.load()
        torch = self._torch
        enc = self.tokenizer([c for c, _ in contexts], return_offsets_mapping=True, truncation=True,
                             max_length=self.max_tokens, padding=False)
        out = np.zeros((len(contexts), self.n_layers, self.dim), np.float32)
        for lo in range(0, len(contexts), self.config.batch_size):
            ids = enc["input_ids"][lo: lo + self.config.batch_size]
            width = max(len(x) for x in ids)
            input_ids = torch.zeros((len(ids), width), dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for r, x in enumerate(ids):
                input_ids[r, :len(x)] = torch.tensor(x, dtype=torch.long)
                mask[r, :len(x)] = 1
            with torch.inference_mode():
                hs = self._model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                 output_hidden_states=True).hidden_states
            states = torch.stack(hs, 1).float()  # (B, N, S, D)
            for r in range(len(ids)):
                i = lo + r
                start = contexts[i][1]
                offsets = enc["offset_mapping"][i]
                tok = [k for k, (a, b) in enumerate(offsets) if b > start and b > a]
                if not tok:  # nothing overlaps (e.g. a tokenizer without offsets): the last token
                    tok = [len(offsets) - 1]
                vec = states[r][:, tok].mean(1)  # (N, D)
                out[i] = select_layers(vec, self.config.layers, self.config.aggregation,
                                       self.config.cache_n_layers).cpu().numpy()
        return out

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0) -> np.ndarray | None:
        """(n_steps, L, D) float32 for one timeline's events; None when it has no Word events."""
        words = events[events["type"] == "Word"]
        if words.empty:
            return None
        self.load()
        contexts = self._contexts(words)
        grid = np.zeros((n_steps, self.n_layers, self.dim), np.float32)
        starts, durs = words["start"].to_numpy(float), words["duration"].to_numpy(float)
        step = max(1, self.config.batch_size * 4)
        for lo in range(0, len(contexts), step):
            vecs = self.embed(contexts[lo: lo + step])
            for j, v in enumerate(vecs):
                place(grid, starts[lo + j], durs[lo + j], v, hz)
            if progress is not None:
                progress(len(vecs))
        return grid

    def n_units(self, events: pd.DataFrame) -> int:
        return int((events["type"] == "Word").sum())
