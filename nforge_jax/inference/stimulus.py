"""From a stimulus file to an events table (TRIBE v2's ``get_events_dataframe``).

:func:`get_events_dataframe` (TRIBE v2's ``get_events_dataframe``; TRIBEV2_SPEC D.3) takes exactly one
of ``video_path`` / ``audio_path`` / ``text_path``:

- video -> a Video event and, when the file has a sound track, an Audio event read straight from the
  container, plus Word events from speech recognition;
- audio -> an Audio event plus Word events from speech recognition;
- text -> Word events timed at ``words_per_second`` (TRIBE v2 synthesises speech and transcribes it back
  instead; that needs a network TTS service), or timed by a word-timing file (``word_timings=``: a
  TextGrid, or a .tsv/.csv with columns word|text, start and duration|stop|end).

Speech recognition is a transformers ASR pipeline with word timestamps (``asr_model``, default
``openai/whisper-large-v3``), used only if the model is a local directory or already in the Hugging Face
cache: otherwise a warning says so and how to fetch it, and the events that need no ASR are returned.
``word_timings=`` skips ASR for audio/video too. Word events get a ``context`` column as TRIBE's AddContextToWords builds it
(:func:`add_context`), and words without one are dropped (:func:`remove_missing`).
Audio/Video events stay whole: the extractors cut them into TRIBE's 60 s chunks.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from nforge_jax.data.events import make_events
from nforge_jax.data.studies.probe import probe_audio, probe_video
from nforge_jax.data.studies.textgrid import read_textgrid

__all__ = ["TEXT_SUFFIXES", "AUDIO_SUFFIXES", "VIDEO_SUFFIXES", "DEFAULT_ASR_MODEL", "DEFAULT_WORDS_PER_SECOND",
           "AsrUnavailableWarning", "get_events_dataframe", "words_from_text", "read_word_timings", "add_context",
           "remove_missing"]

TEXT_SUFFIXES = (".txt",)
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
DEFAULT_ASR_MODEL = "openai/whisper-large-v3"
DEFAULT_WORDS_PER_SECOND = 2.5  # ~150 words per minute, a typical read-aloud rate


class AsrUnavailableWarning(UserWarning):
    """The speech-recognition model is not available offline; the events have no Word rows from speech."""


def words_from_text(text: str, words_per_second: float = DEFAULT_WORDS_PER_SECOND, start: float = 0.0) -> list[dict]:
    """Whitespace-separated words, back to back at ``words_per_second``."""
    if not words_per_second > 0:
        raise ValueError(f"words_per_second: expected > 0, got {words_per_second}")
    dur = 1.0 / words_per_second
    return [{"text": w, "start": start + i * dur, "duration": dur} for i, w in enumerate(text.split())]


_SILENCE = {"", "sil", "sp", "spn", "<sil>", "{sil}", "{lg}", "{ns}", "<unk>"}


def read_word_timings(path) -> list[dict]:
    """[{"text", "start", "duration"}] from a TextGrid (tier "words"/"word", else the first interval tier;
    silence marks dropped) or a .tsv/.csv (columns word|text, start, and duration|stop|end)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: word-timing file not found")
    if path.suffix.lower() == ".textgrid":
        tiers = [t for t in read_textgrid(path) if t.kind == "IntervalTier"]
        if not tiers:
            raise ValueError(f"{path}: no interval tier; expected a tier of words")
        tier = next((t for t in tiers if t.name.strip().lower() in ("words", "word")), tiers[0])
        return [{"text": txt.strip(), "start": float(a), "duration": float(b) - float(a)}
                for a, b, txt in tier.items if txt.strip().lower() not in _SILENCE]
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    df = pd.read_csv(path, sep=sep, keep_default_na=False)
    cols = {c.lower(): c for c in df.columns}
    word = cols.get("word") or cols.get("text")
    if word is None or "start" not in cols:
        raise ValueError(f"{path}: expected columns 'word' (or 'text') and 'start', plus 'duration' or "
                         f"'stop'/'end'; found {list(df.columns)}")
    start = pd.to_numeric(df[cols["start"]], errors="coerce")
    if "duration" in cols:
        dur = pd.to_numeric(df[cols["duration"]], errors="coerce")
    elif "stop" in cols or "end" in cols:
        dur = pd.to_numeric(df[cols.get("stop") or cols["end"]], errors="coerce") - start
    else:
        raise ValueError(f"{path}: expected a 'duration', 'stop' or 'end' column; found {list(df.columns)}")
    bad = np.flatnonzero(~(np.isfinite(start.to_numpy(float)) & np.isfinite(dur.to_numpy(float))
                           & (dur.to_numpy(float) >= 0)))
    if bad.size:
        raise ValueError(f"{path}: row {int(bad[0]) + 2}: start/duration must be numbers with duration >= 0")
    return [{"text": str(w).strip(), "start": float(s), "duration": float(d)}
            for w, s, d in zip(df[word], start, dur) if str(w).strip().lower() not in _SILENCE]


def _sentence_chars(sentence: str, words: Sequence[str]) -> list[float]:
    """Where each word starts in its sentence, searching forward from the previous word's end (NaN when
    it is not found)."""
    out, pos = [], 0
    for w in words:
        i = sentence.find(w, pos)
        out.append(float("nan") if i < 0 else float(i))
        pos = pos if i < 0 else i + len(w)
    return out


def add_context(events: pd.DataFrame, max_context_len: int | None = 1024) -> pd.DataFrame:
    """Set ``context`` of every Word row as TRIBE v2 builds it (AddContextToWords with sentence_only=False,
    split_field=""): the text of the timeline up to and including the word, made of the words' sentence
    parts (each part: the sentence text from the end of the previous word to the end of this one, so
    punctuation and spacing are the sentence's), at most ``max_context_len`` parts before the word, reset at
    each timeline. The rest of a sentence is appended when the next sentence starts.

    The sentence of a word is its ``sentence`` column (with ``sentence_char``, where the word starts in
    it; found by a forward search when absent). Words without a sentence are treated as one running text
    per timeline, joined by single spaces. A word that is not found in its sentence gets an empty
    context, and TRIBE then drops it (:func:`remove_missing`).
    """
    events = events.copy()
    events["context"] = ""
    for _, idx in events[events["type"] == "Word"].groupby("timeline", sort=False).groups.items():
        rows = events.loc[idx].sort_values("start", kind="mergesort")
        texts = [str(t) for t in rows["text"]]
        has = rows["sentence"].map(lambda v: isinstance(v, str) and bool(v)) if "sentence" in rows.columns \
            else pd.Series(False, index=rows.index)
        if not has.any():
            sentences = [" ".join(texts)] * len(texts)
            chars = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]]).astype(float).tolist()
        else:
            sentences = [s if h else "" for s, h in zip(rows["sentence"].tolist(), has)]
            given = rows["sentence_char"].tolist() if "sentence_char" in rows.columns else [None] * len(texts)
            chars = [float("nan")] * len(texts)
            k = 0
            while k < len(texts):  # runs of consecutive words sharing a sentence
                j = k
                while j < len(texts) and sentences[j] == sentences[k]:
                    j += 1
                found = _sentence_chars(sentences[k], texts[k:j]) if sentences[k] else [float("nan")] * (j - k)
                for i in range(k, j):
                    g = given[i]
                    chars[i] = float(g) if g is not None and np.isfinite(float(g)) else found[i - k]
                k = j
        parts: list[str] = []
        last, start_char = None, 0
        contexts = []
        for i, (word, sentence, char) in enumerate(zip(texts, sentences, chars)):
            if not sentence or not np.isfinite(char):
                contexts.append("")
                continue
            char = int(char)
            if last is not None:
                if sentence != sentences[last] or char <= int(chars[last]):  # a new sentence
                    if parts:
                        parts[-1] += sentences[last][start_char:]
                    start_char = 0
                elif parts:
                    parts[-1] += sentence[start_char:char]
                    start_char = char
            new = sentence[start_char: char + len(word)]
            contexts.append("".join(parts) + new)
            parts.append(new)
            if max_context_len is not None and len(parts) > max_context_len:
                del parts[0]
            start_char, last = char + len(word), i
        events.loc[rows.index, "context"] = contexts
    return events


def remove_missing(events: pd.DataFrame) -> pd.DataFrame:
    """Drop Word rows without a context (TRIBE v2's RemoveMissing)."""
    if "context" not in events.columns:
        return events
    missing = (events["type"] == "Word") & events["context"].fillna("").eq("")
    return events[~missing]


def _asr_words(path, asr, asr_model, language) -> list[dict]:
    if asr is False:
        return []
    if callable(asr):
        return list(asr(path))
    from nforge_jax.extract.asr import transcribe_words
    from nforge_jax.extract.models import ModelNotAvailable

    try:
        return transcribe_words(path, asr_model, language=language)
    except ModelNotAvailable as exc:
        warnings.warn(f"{exc} Continuing without speech recognition: the events have no Word rows, so no text "
                      "features (pass word_timings= to time the words from a file).", AsrUnavailableWarning,
                      stacklevel=3)
        return []


def get_events_dataframe(video_path=None, audio_path=None, text_path=None, *, word_timings=None,
                         words_per_second: float = DEFAULT_WORDS_PER_SECOND, asr_model: str = DEFAULT_ASR_MODEL,
                         asr: Callable[[Any], Sequence[Mapping]] | bool | None = None,
                         language: str = "english", context_words: int = 1024, timeline: str = "default",
                         subject: str = "default") -> pd.DataFrame:
    """Events table for one stimulus file (see the module docstring).

    asr: None = the transformers pipeline with ``asr_model``; False = no speech recognition; a callable
    path -> [{"text", "start", "duration"}] replaces the pipeline.
    """
    given = {k: v for k, v in (("video_path", video_path), ("audio_path", audio_path), ("text_path", text_path))
             if v is not None}
    if len(given) != 1:
        raise ValueError(f"get_events_dataframe: expected exactly one of video_path, audio_path, text_path; "
                         f"got {sorted(given) or 'none'}")
    kind, path = next(iter(given.items()))
    path = Path(path)
    allowed = {"video_path": VIDEO_SUFFIXES, "audio_path": AUDIO_SUFFIXES, "text_path": TEXT_SUFFIXES}[kind]
    if path.suffix.lower() not in allowed:
        raise ValueError(f"{kind}={str(path)!r}: expected a file ending in one of {list(allowed)}")
    if not path.is_file():
        raise FileNotFoundError(f"{kind}={str(path)!r}: no such file")
    base = {"timeline": timeline, "subject": subject}
    rows: list[dict] = []
    speech_source = None
    if kind == "video_path":
        info = probe_video(path)
        rows.append({**base, "type": "Video", "start": 0.0, "duration": info.duration, "filepath": str(path),
                     "offset": 0.0, "frequency": info.fps})
        if info.has_audio:
            rows.append({**base, "type": "Audio", "start": 0.0, "duration": info.duration, "filepath": str(path),
                         "offset": 0.0, "frequency": info.audio_rate})
            speech_source = path
    elif kind == "audio_path":
        info = probe_audio(path)
        rows.append({**base, "type": "Audio", "start": 0.0, "duration": info.duration, "filepath": str(path),
                     "offset": 0.0, "frequency": info.sample_rate})
        speech_source = path
    if word_timings is not None:
        words = read_word_timings(word_timings)
    elif kind == "text_path":
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise ValueError(f"text_path={str(path)!r}: the file has no words")
        words = words_from_text(text, words_per_second)
    elif speech_source is not None:
        words = _asr_words(speech_source, asr, asr_model, language)
    else:
        words = []
    for w in words:
        rows.append({**base, "type": "Word", "start": float(w["start"]), "duration": float(w["duration"]),
                     "text": str(w["text"]), "language": language})
    if not rows:
        raise ValueError(f"{kind}={str(path)!r}: no events (a video without frames or sound?)")
    events = make_events(rows, source=str(path))
    return remove_missing(add_context(events, context_words)) if words else events
