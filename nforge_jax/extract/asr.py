"""Words with times from speech: a transformers automatic-speech-recognition pipeline with word timestamps.

TRIBE v2 runs WhisperX large-v3 (English) through ``uvx``; here any transformers ASR model that supports
``return_timestamps="word"`` (the Whisper family) is used, offline: the model must be a local directory
or already in the Hugging Face cache (:class:`~nforge_jax.extract.models.ModelNotAvailable` otherwise,
saying how to fetch it).
"""

from __future__ import annotations

import math

from nforge_jax.extract.models import resolve_model, torch_device, torch_dtype
from nforge_jax.extract.decode import read_audio

__all__ = ["DEFAULT_ASR_MODEL", "transcribe_words", "words_from_chunks"]

DEFAULT_ASR_MODEL = "openai/whisper-large-v3"


def words_from_chunks(chunks, offset: float = 0.0, max_s: float | None = None) -> list[dict]:
    """Pipeline ``chunks`` [{"text", "timestamp": (start, end)}] -> [{"text", "start", "duration"}] (sorted).

    Empty words are dropped; a missing end takes the next word's start (or start + 0.2 s). With ``max_s`` (the
    audio's duration), words the model placed at or after the end are dropped and the others end by it
    (Whisper's timestamps can run past the audio on silence or noise).
    """
    rows = []
    for c in chunks:
        text = str(c.get("text", "")).strip()
        ts = c.get("timestamp") or (None, None)
        start, end = ts[0], ts[1] if len(ts) > 1 else None
        if not text or start is None or not math.isfinite(float(start)):
            continue
        if max_s is not None and float(start) >= max_s:
            continue
        rows.append([text, float(start), None if end is None else float(end)])
    rows.sort(key=lambda r: r[1])
    out = []
    for i, (text, start, end) in enumerate(rows):
        if end is None or end < start:
            end = rows[i + 1][1] if i + 1 < len(rows) else start + 0.2
        if max_s is not None:
            end = min(end, max_s)
        out.append({"text": text, "start": offset + start, "duration": max(0.0, end - start)})
    return out


def transcribe_words(audio_path, model_id: str = DEFAULT_ASR_MODEL, *, language: str | None = "english",
                     device: str = "auto", dtype: str = "auto", chunk_length_s: float = 30.0,
                     batch_size: int = 8) -> list[dict]:
    """[{"text", "start", "duration"}] of the words spoken in ``audio_path`` (seconds from its start)."""
    from transformers import pipeline

    path = resolve_model(model_id, "speech recognition")
    dev = torch_device(device)
    asr = pipeline("automatic-speech-recognition", model=str(path), device=dev, dtype=torch_dtype(dtype, dev))
    sr = int(getattr(asr.feature_extractor, "sampling_rate", 16000))
    wav, _ = read_audio(audio_path, sr)
    kwargs = {"return_timestamps": "word", "chunk_length_s": chunk_length_s, "batch_size": batch_size}
    if language:
        kwargs["generate_kwargs"] = {"language": language, "task": "transcribe"}
    result = asr({"raw": wav, "sampling_rate": sr}, **kwargs)
    return words_from_chunks(result.get("chunks", []), max_s=len(wav) / sr)
