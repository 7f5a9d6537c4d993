"""Text features: contextual word embeddings from a causal language model (TRIBE v2: Llama-3.2-3B).

The rule is the release's (neuralset 0.0.2 ``HuggingFaceText``, TRIBEV2_SPEC D.2), kept as it is on
purpose so that a released head gets the features it was trained on. For each Word event of a timeline,
in event order, ``batch_size`` words at a time:

1. the text run is the word's ``context`` (what :func:`nforge_jax.inference.stimulus.add_context` and
   TRIBE's AddContextToWords write: the preceding text of the timeline ending with the word); without a
   context column the up to ``context_words`` preceding words and the word, joined by spaces;
2. the batch of contexts is tokenized without special tokens (no BOS), padded (pad := eos when the
   tokenizer has none) on the tokenizer's padding side and truncated on the left to its maximum length,
   and run through the model with ``output_hidden_states``;
3. quirks kept: the pads of a row are *counted* as its tokens equal to ``eos_token_id`` and that many
   tokens are cut from the end; the word's span is the last ``max(1, n_tokens - n_pads - n_prefix)``
   tokens, ``n_prefix`` the token count of ``context[:-len(word)].rstrip()`` tokenized alone (so a separate
   leading-space token stays in the span). With a pad token distinct from eos nothing is counted and the
   span takes the pad positions of shorter rows: a word's vector then depends on which words share its
   batch (the release has that too);
4. states kept (``cache_n_layers``), tokens aggregated (``token_aggregation``), layers grouped -> (L, D),
   added to the 2 Hz rows the word covers in each 100 s window (``layers.place``).

A causal model gives a token the same states in any sequence that starts with the same tokens, so the leading
words of a timeline, whose contexts each hold the whole text before them (the first ``max_context_len``
words), are read from one forward over the last of those contexts (:meth:`TextExtractor.embed_leading`);
only the words after them get a forward each.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from nforge_jax.extract.hidden_states import aggregate_tokens, kept_states, layer_indices, select_layers
from nforge_jax.extract.models import ModelExtractor
from nforge_jax.extract.placement import place
from nforge_jax.extract.text_shared import SharedContextPass

__all__ = ["CONTEXT_PASSES", "TextConfig", "TextExtractor", "word_contexts"]

CONTEXT_PASSES = ("per_word", "shared")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    model_id: str = "meta-llama/Llama-3.2-3B"
    layers: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    aggregation: str = "cat"  # or "group_mean" (TRIBE v2's release: layers (0.5, 0.75, 1.0))
    cache_n_layers: int | None = None  # keep K evenly spaced hidden states first (layers.kept_states)
    token_aggregation: str = "mean"  # over a word's tokens: mean | sum | max | first | last
    context_words: int = 1024  # preceding words of context per word, when the events carry no context
    contextualized: bool = True  # False: each word is embedded alone
    batch_size: int = 8
    # "per_word": the release's rule, one forward per word over its context; "shared": one forward per block
    # of the timeline's text (text_shared.py), the same vectors for the first context_words words
    context_pass: str = "per_word"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        layer_indices(101, self.layers, self.aggregation, self.cache_n_layers)  # validates
        aggregate_tokens(None, self.token_aggregation)
        if int(self.batch_size) < 1:
            raise ValueError(f"text batch_size: expected an integer >= 1, got {self.batch_size}")
        if self.context_pass not in CONTEXT_PASSES:
            raise ValueError(f"text context_pass: expected one of {CONTEXT_PASSES}, got {self.context_pass!r}")
        if self.context_pass == "shared" and not self.contextualized:
            raise ValueError("text context_pass 'shared' shares contexts between words: it needs contextualized=True")


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

    def on_load(self, path, model):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, truncation_side="left")
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"{path}: the tokenizer has neither a pad nor an eos token; batching words needs one")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.eos_token_id  # the release counts eos tokens as pads
        self.n_model_tokens = 0  # tokens run through the model (padding included), for tools/bench.py
        self.n_leading_words = 0  # words read from one pass by the release rule (embed_leading)
        self.n_own_forwards = 0  # words of a pass that needed a forward of their own (text_shared.py)

    def meta_extra(self) -> dict:
        return {"cache_n_layers": self.config.cache_n_layers, "context_words": self.config.context_words,
                "context_pass": self.config.context_pass}

    def _pairs(self, words: pd.DataFrame) -> list[tuple[str, str]]:
        """(word, text run) per word: the ``context`` column where it is a non-empty string, else built."""
        texts = [str(t) for t in words["text"]]
        if not self.config.contextualized:
            return [(w, w) for w in texts]
        built = word_contexts(texts, self.config.context_words)
        given = words["context"].tolist() if "context" in words.columns else [None] * len(texts)
        return [(w, c if isinstance(c, str) and c else b) for w, c, b in zip(texts, given, built)]

    def embed(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """(len(pairs), L, D) float32 word vectors by the release's rule, ``batch_size`` pairs per forward."""
        self.load()
        torch = self._torch
        kept = kept_states(self.n_states, self.config.cache_n_layers)
        out = np.zeros((len(pairs), self.n_layers, self.dim), np.float32)
        n_prefix = self._prefix_counts(pairs)
        for rows, inputs in self._batches(pairs):
            self.n_model_tokens += int(inputs["input_ids"].numel())
            with torch.inference_mode():
                hs = self._model(**{k: v.to(self.device) for k, v in inputs.items()},
                                 output_hidden_states=True).hidden_states
            states = torch.stack(hs)[kept]  # (K, B, S, D)
            n_tokens = states.shape[2]
            for r, i in enumerate(rows):
                n_pads = 0 if self.pad_id is None else int((inputs["input_ids"][r] == self.pad_id).sum())
                h = states[:, r, : n_tokens - n_pads] if n_pads else states[:, r]
                if self.config.contextualized:
                    h = h[:, -max(1, n_tokens - n_pads - n_prefix[i]):]
                vec = aggregate_tokens(h, self.config.token_aggregation).float()  # (K, D)
                # vec holds the kept states only: group them as they are (no second subselection)
                out[i] = select_layers(vec, self.config.layers, self.config.aggregation).cpu().numpy()
        return out

    def _prefix_counts(self, pairs) -> list[int]:
        """Token count of each context less its word, right-stripped (0 when empty), in one tokenizer call."""
        if not self.config.contextualized:
            return [0] * len(pairs)
        prefixes = [context[: -len(word)].rstrip() for word, context in pairs]
        ids = self.tokenizer(prefixes, add_special_tokens=False)["input_ids"] if pairs else []
        return [len(row) if p else 0 for p, row in zip(prefixes, ids)]

    def _batches(self, pairs):
        """(rows, model inputs) per forward. With pad = eos padded on the right (the Llama 3 tokenizer), pads
        are masked, counted and cut, so a row does not depend on its batch: rows of the same token count go
        together, unpadded, and the model takes its causal attention path without a padding mask (the same
        vectors, 2-3x faster on a CPU). Otherwise consecutive rows, padded, exactly as the release batches."""
        size, tok = self.config.batch_size, self.tokenizer
        texts = [context for _, context in pairs]
        if tok.pad_token_id != tok.eos_token_id or tok.padding_side != "right":
            for lo in range(0, len(pairs), size):
                yield list(range(lo, min(lo + size, len(pairs)))), tok(
                    texts[lo: lo + size], add_special_tokens=False, return_tensors="pt", padding=True, truncation=True)
            return
        ids = tok(texts, add_special_tokens=False, truncation=True)["input_ids"] if pairs else []
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(i)
        rest = []  # rows left over from full groups: padded batches of similar lengths, as the release's
        for rows in by_length.values():
            full = len(rows) - len(rows) % size
            rest += rows[full:]
            for lo in range(0, full, size):
                yield rows[lo: lo + size], {"input_ids": self._torch.tensor([ids[i] for i in rows[lo: lo + size]])}
        rest.sort(key=lambda i: len(ids[i]))
        for lo in range(0, len(rest), size):
            part = rest[lo: lo + size]
            yield part, tok.pad({"input_ids": [ids[i] for i in part]}, return_tensors="pt")

    def _shared_pass(self) -> SharedContextPass:
        """The one-forward-per-block machinery (text_shared.py) on this extractor's model and reductions."""
        self.load()
        torch, c = self._torch, self.config
        kept = kept_states(self.n_states, c.cache_n_layers)

        def run_states(ids):  # (K, S, D): the kept states of one token sequence
            with torch.inference_mode():
                hs = self._model(input_ids=torch.tensor([ids], device=self.device),
                                 output_hidden_states=True).hidden_states
            return torch.stack([hs[i][0] for i in kept])

        def reduce(h):  # as embed: tokens aggregated in the model's dtype, then the kept states grouped
            return select_layers(aggregate_tokens(h, c.token_aggregation).float(), c.layers, c.aggregation).cpu().numpy()

        return SharedContextPass(self.tokenizer, run_states, reduce, c.context_words)

    def _count(self, shared: SharedContextPass) -> None:
        self.n_model_tokens += shared.n_model_tokens
        self.n_own_forwards += shared.n_own_forwards

    def embed_shared(self, pairs: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None
                     ) -> np.ndarray:
        """(len(pairs), L, D) float32 word vectors of one timeline by the shared pass (text_shared.py)."""
        shared = self._shared_pass()
        out = shared.embed(pairs, np.zeros((len(pairs), self.n_layers, self.dim), np.float32), progress)
        self._count(shared)
        return out

    def embed_leading(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The release rule's vectors of a timeline's leading words, those whose context is the whole text
        before them (the first ``max_context_len`` words), from one causal pass: the same computation as
        :meth:`embed` on each (tests: within 1e-5 of it and of neuralset). Returns the (n, L, D) vectors of
        the first n words, n = 0 where no such run of two words exists or the rule's own batching decides a
        word's vector (a pad token other than eos, or left padding: a word then depends on its batch)."""
        tok = self.tokenizer
        if (not self.config.contextualized or tok.pad_token_id != tok.eos_token_id or tok.padding_side != "right"):
            return np.zeros((0, self.n_layers, self.dim), np.float32)
        shared = self._shared_pass()
        out = np.zeros((len(pairs), self.n_layers, self.dim), np.float32)
        n = shared.embed_leading(pairs, out, self.pad_id, tok.model_max_length)
        self._count(shared)
        self.n_leading_words += n
        return out[:n]

    def extract(self, events: pd.DataFrame, n_steps: int, progress: Callable[[int], None] | None = None,
                hz: float = 2.0, origin: float = 0.0) -> np.ndarray | None:
        """(n_steps, L, D) float32 for one timeline's events; None when it has no Word events. ``origin``:
        where the timeline's 100 s windows start (its earliest event)."""
        words = events[events["type"] == "Word"]
        if words.empty:
            return None
        self.load()
        pairs = self._pairs(words)
        for (word, context) in pairs:
            if not word or not context:
                raise ValueError(f"Word event with empty text or context ({word!r}, {context!r})")
        grid = np.zeros((n_steps, self.n_layers, self.dim), np.float32)
        starts, durs = words["start"].to_numpy(float), words["duration"].to_numpy(float)
        if self.config.context_pass == "shared":
            for j, v in enumerate(self.embed_shared(pairs, progress)):
                place(grid, starts[j], durs[j], v, hz, origin)
            return grid
        lead = self.embed_leading(pairs)
        for j, v in enumerate(lead):
            place(grid, starts[j], durs[j], v, hz, origin)
        if progress is not None and len(lead):
            progress(len(lead))
        step = max(1, self.config.batch_size * 4)
        for lo in range(len(lead), len(pairs), step):
            vecs = self.embed(pairs[lo: lo + step])
            for j, v in enumerate(vecs):
                place(grid, starts[lo + j], durs[lo + j], v, hz, origin)
            if progress is not None:
                progress(len(vecs))
        return grid

    def n_units(self, events: pd.DataFrame) -> int:
        return int((events["type"] == "Word").sum())
