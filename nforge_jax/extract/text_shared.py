"""``text.context_pass = "shared"``: one causal forward per block of a timeline's text instead of one per word.

The release rule (:mod:`nforge_jax.extract.text`) runs the model once per word over its context, up to
1,024 preceding words (≈ 1,400 tokens per word for Llama-3.2). Here the timeline's running text is rebuilt
from the words' contexts and cut into passes of whole words, ``B = context_words`` words each:

- pass 1 runs over words [0, 2B) and gives every one of them its vector;
- pass k >= 2 runs over words [(k - 1)B, (k + 1)B) and gives the words [kB, (k + 1)B) theirs.

Word i's vector is the release rule applied to the context "the pass's text up to the end of word i": its
tokens are ``tokenize(context)`` (no BOS), its span the last ``max(1, n - n_prefix)`` of them, ``n_prefix``
the token count of ``context[:-len(word)].rstrip()``; states kept, tokens and layers aggregated as the
release does. For a causal model the states of those tokens are the ones of the pass, so the release's
computation is reproduced exactly for every word whose release context is the whole preceding text (the
first ``max_context_len`` words); later words see between B and 2B preceding words instead of B.

Tokenization at word boundaries. The release tokenizes each context string on its own, and a BPE can tokenize
the end of a prefix differently from the same characters inside the longer text (Llama 3's pre-tokenizer joins
"down." + "Children" into one piece ".Children" when sentences are joined without a space). So the pass does
not assume that a word's tokens are a prefix of the whole text's: the text is tokenized once, and for each
word only its last pre-token (the piece holding its final character) is tokenized again as a string of its
own. Pre-tokenizers split by regular expressions, so everything before that piece is tokenized as in the
whole text, and ``ids[:k] + tokenize(piece)`` is exactly ``tokenize(context)``. Where those tokens are the
pass's own (nearly always) the word is read from the pass; where they differ, the word gets a forward of its
own over its exact tokens (counted in the reported tokens per word). A sample of words per pass is
checked against tokenizing the whole context, and a tokenizer for which that reasoning fails (no
pre-tokenizer, a normalizer) is refused with the setting to change.
"""

from __future__ import annotations

import numpy as np

__all__ = ["running_text", "pass_plan", "SharedContextPass"]

_CHECK_EVERY = 97  # words per pass compared with the whole-context tokenization (plus the first and last)


def running_text(pairs) -> tuple[str, list[int]]:
    """(text, ends): the running text the (word, context) pairs come from and where each word's context ends
    in it. Each context must continue the previous one: the previous context, less some of its first
    characters (parts dropped beyond the context length), followed by new text that ends with the word."""
    text, ends, start = "", [], 0
    for i, (word, context) in enumerate(pairs):
        if not text:
            text = context
        else:
            prev = text[start:]
            d = _overlap(prev, context, len(word))
            if d is None:
                raise ValueError(f"word {i} ({word!r}): its context does not continue the text of the words before "
                                 "it; text.context_pass 'shared' needs the contexts of a running text (as "
                                 "add_context writes them); use text.context_pass 'per_word'")
            text += context[len(prev) - d:]
            start += d
        ends.append(len(text))
    return text, ends


def _overlap(prev: str, context: str, n_new: int) -> int | None:
    """The smallest d with ``context == prev[d:] + new``, ``len(new) >= n_new``, ``prev[d:]`` not empty."""
    if context.startswith(prev) and len(context) - len(prev) >= n_new:
        return 0
    d = prev.find(context[:1], 1)
    while 0 < d < len(prev):
        if context.startswith(prev[d:]) and len(context) - (len(prev) - d) >= n_new:
            return d
        d = prev.find(context[:1], d + 1)
    return None


def pass_plan(n_words: int, block: int) -> list[tuple[int, int, int]]:
    """(first context word, first word read, end of words read) per pass."""
    if block < 1:
        raise ValueError(f"text context_words: expected an integer >= 1 for the shared pass, got {block}")
    plan, k = [(0, 0, min(n_words, 2 * block))], 2
    while k * block < n_words:
        plan.append(((k - 1) * block, k * block, min(n_words, (k + 1) * block)))
        k += 1
    return plan


class _Tokenized:
    """One pass's text tokenized once: ids, pre-token starts and the tokens before each pre-token, so that
    ``len(tokenize(text[:p]))`` and ``tokenize(text[:e])`` are found by tokenizing one pre-token again."""

    def __init__(self, tokenizer, text: str):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or backend.pre_tokenizer is None or backend.normalizer is not None:
            raise ValueError("text.context_pass 'shared' needs a fast tokenizer with a pre-tokenizer and no "
                             "normalizer (as Llama 3's); use text.context_pass 'per_word' with this tokenizer")
        enc = tokenizer(text, add_special_tokens=False)
        self.tokenizer, self.text, self.ids = tokenizer, text, list(enc["input_ids"])
        words = np.asarray(enc.word_ids(), np.int64)
        self.starts = np.asarray([a for _, (a, _) in backend.pre_tokenizer.pre_tokenize_str(text)], np.int64)
        self.before = np.concatenate([[0], np.cumsum(np.bincount(words, minlength=len(self.starts)))])
        if len(words) and (np.any(np.diff(words) < 0) or self.before[-1] != len(self.ids)):
            raise ValueError("text.context_pass 'shared': the tokenizer's pieces do not line up with its tokens; "
                             "use text.context_pass 'per_word' with this tokenizer")

    def piece(self, p: int) -> tuple[int, str]:
        """(tokens before the pre-token holding character p - 1, that pre-token cut at p)."""
        w = int(np.searchsorted(self.starts, p - 1, side="right")) - 1
        return int(self.before[w]), self.text[int(self.starts[w]): p]


class SharedContextPass:
    """Word vectors of one timeline by the shared pass; ``run_states(ids) -> (K, S, D)`` runs the model on
    one token sequence, ``reduce(h) -> (L, D)`` aggregates a word's (K, tokens, D) states."""

    def __init__(self, tokenizer, run_states, reduce, block: int):
        self.tokenizer, self.run_states, self.reduce, self.block = tokenizer, run_states, reduce, block
        self.n_model_tokens = 0  # tokens through the model, for the benchmark's tokens per word
        self.n_own_forwards = 0  # words whose exact tokens differ from the pass's

    def embed(self, pairs, out: np.ndarray, progress=None) -> np.ndarray:
        text, ends = running_text(pairs)
        for first_context, lo, hi in pass_plan(len(pairs), self.block):
            s = ends[first_context - 1] if first_context else 0
            tok = _Tokenized(self.tokenizer, text[s: ends[hi - 1]])
            spans = self._spans(tok, [(pairs[i][0], ends[i] - s) for i in range(lo, hi)])
            states = self._run(tok.ids)
            for j, (k, tail, n_tokens, n_span) in enumerate(spans):
                if tok.ids[k: k + len(tail)] == tail:
                    h = states[:, n_tokens - n_span: n_tokens]
                else:  # the word's own tokens differ from the pass's at its end: its own forward
                    self.n_own_forwards += 1
                    h = self._run(tok.ids[:k] + tail)[:, -n_span:]
                out[lo + j] = self.reduce(h)
            if progress is not None:
                progress(hi - lo)
        return out

    def _run(self, ids):
        self.n_model_tokens += len(ids)
        return self.run_states(ids)

    def _spans(self, tok: _Tokenized, words) -> list[tuple[int, list[int], int, int]]:
        """Per word (word, end in the pass's text): (k, tail ids, its token count n, span length): its
        context's tokens are ``tok.ids[:k] + tail``, its span their last ``max(1, n - n_prefix)``."""
        heads, strings = [], []
        for word, e in words:
            p = len(tok.text[: e - len(word)].rstrip())
            (k, piece), (kp, prefix_piece) = tok.piece(e), tok.piece(p) if p else (0, "")
            heads.append((k, kp, p))
            strings += [piece, prefix_piece]
        ids = self.tokenizer(strings, add_special_tokens=False)["input_ids"] if strings else []
        out = []
        for j, (k, kp, p) in enumerate(heads):
            tail, n_prefix = list(ids[2 * j]), (kp + len(ids[2 * j + 1]) if p else 0)
            out.append((k, tail, k + len(tail), max(1, k + len(tail) - n_prefix)))
        self._check(tok, words, out)
        return out

    def _check(self, tok: _Tokenized, words, spans) -> None:
        """The reasoning above, verified on some words against tokenizing their whole context."""
        for j in sorted({0, len(words) - 1, *range(0, len(words), _CHECK_EVERY)}):
            word, e = words[j]
            k, tail, _, n_span = spans[j]
            full = self.tokenizer(tok.text[:e], add_special_tokens=False)["input_ids"]
            prefix = tok.text[: e - len(word)].rstrip()
            n_prefix = len(self.tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
            if list(full) != tok.ids[:k] + tail or max(1, len(full) - n_prefix) != n_span:
                raise ValueError(f"text.context_pass 'shared': this tokenizer tokenizes the context of {word!r} "
                                 "differently from its pieces; use text.context_pass 'per_word' with it")
