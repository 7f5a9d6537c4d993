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

The release rule uses the same machinery where it is the same computation (:meth:`SharedContextPass.embed_leading`):
the leading words of a timeline whose contexts each hold the whole text before them (all words up to
``max_context_len``) are read from one pass; the words after get their own forward as the rule says.
"""

from __future__ import annotations

import numpy as np

__all__ = ["running_text", "leading_words", "pass_plan", "SharedContextPass", "TokenizerUnsuited"]

_CHECK_EVERY = 97  # words per pass compared with the whole-context tokenization (plus the first and last)


class TokenizerUnsuited(ValueError):
    """The tokenizer's pieces cannot be shown to tokenize a word's context as the whole text does."""


def leading_words(pairs) -> int:
    """How many words, from the first, have as context the previous word's context followed by new text
    ending with the word: nothing of the text before them dropped, so one causal pass over the last of these
    contexts holds every one of them."""
    n, prev = 0, None
    for word, context in pairs:
        if prev is not None and not (context.startswith(prev) and len(context) - len(prev) >= len(word)):
            break
        prev, n = context, n + 1
    return n


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
            raise TokenizerUnsuited("text.context_pass 'shared' needs a fast tokenizer with a pre-tokenizer and no "
                             "normalizer (as Llama 3's); use text.context_pass 'per_word' with this tokenizer")
        enc = tokenizer(text, add_special_tokens=False)
        self.tokenizer, self.text, self.ids = tokenizer, text, list(enc["input_ids"])
        words = np.asarray(enc.word_ids(), np.int64)
        self.starts = np.asarray([a for _, (a, _) in backend.pre_tokenizer.pre_tokenize_str(text)], np.int64)
        self.before = np.concatenate([[0], np.cumsum(np.bincount(words, minlength=len(self.starts)))])
        if len(words) and (np.any(np.diff(words) < 0) or self.before[-1] != len(self.ids)):
            raise TokenizerUnsuited("text.context_pass 'shared': the tokenizer's pieces do not line up with its tokens; "
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
            self._read(tok, self._spans(tok, [(pairs[i][0], ends[i] - s) for i in range(lo, hi)]), out[lo: hi])
            if progress is not None:
                progress(hi - lo)
        return out

    def embed_leading(self, pairs, out: np.ndarray, pad_id: int | None = None, max_tokens: int | None = None) -> int:
        """The release rule's vectors of the :func:`leading_words` of ``pairs`` from one pass, written to
        ``out[:n]``; returns n (0 when fewer than two words share a pass). Words are left to their own forward
        from the first whose context is over ``max_tokens`` tokens (the release truncates those) and from any
        ``pad_id`` token in the text on (the release counts those as pads and cuts them)."""
        n = leading_words(pairs)
        if n < 2:
            return 0
        text, ends = running_text(pairs[:n])
        try:
            tok = _Tokenized(self.tokenizer, text)
            spans = self._spans(tok, [(pairs[i][0], ends[i]) for i in range(n)])
        except TokenizerUnsuited:
            return 0
        first_pad = tok.ids.index(pad_id) if pad_id is not None and pad_id in tok.ids else len(tok.ids)
        for j, (k, tail, n_tokens, _) in enumerate(spans):
            if (max_tokens is not None and n_tokens > max_tokens) or k > first_pad or pad_id in tail:
                n = j
                break
        if n < 2:
            return 0
        last_k, last_tail, last_n, _ = spans[n - 1]
        ids = tok.ids[:last_n] if tok.ids[last_k: last_n] == last_tail else tok.ids[:last_k] + last_tail
        tok.ids = ids  # the pass runs up to the last leading word's context only
        self._read(tok, spans[:n], out[:n])
        return n

    def _read(self, tok: _Tokenized, spans, out: np.ndarray) -> None:
        """One forward over ``tok.ids``; each word's span read from it, or from a forward of its own where its
        context's tokens differ from the pass's."""
        states = self._run(tok.ids)
        for j, (k, tail, n_tokens, n_span) in enumerate(spans):
            if tok.ids[k: k + len(tail)] == tail:
                h = states[:, n_tokens - n_span: n_tokens]
            else:  # the word's own tokens differ from the pass's at its end: its own forward
                self.n_own_forwards += 1
                h = self._run(tok.ids[:k] + tail)[:, -n_span:]
            out[j] = self.reduce(h)

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
                raise TokenizerUnsuited(f"text.context_pass 'shared': this tokenizer tokenizes the context of {word!r} "
                                 "differently from its pieces; use text.context_pass 'per_word' with it")
