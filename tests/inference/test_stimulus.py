"""get_events_dataframe: a stimulus file (video / audio / text) -> an events table, words by ASR or timings."""

import numpy as np
import pandas as pd
import pytest

from extract_helpers import make_tiny_whisper
from nforge_jax.extract.asr import transcribe_words, words_from_chunks
from nforge_jax.inference.stimulus import AsrUnavailableWarning, get_events_dataframe, read_word_timings


def word_file(tmp_path):
    path = tmp_path / "words.tsv"
    pd.DataFrame({"word": ["the", "cat", "sat", "down"], "start": [0.2, 0.7, 1.9, 3.1],
                  "end": [0.5, 1.2, 2.3, 3.6]}).to_csv(path, sep="\t", index=False)
    return path


def test_events_from_video_without_asr_model(media, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.warns(AsrUnavailableWarning, match=r"hf download nobody/no-asr-model"):
        ev = get_events_dataframe(video_path=media["mp4"], asr_model="nobody/no-asr-model")
    assert list(ev["type"]) == ["Video", "Audio"]
    assert (ev["filepath"] == str(media["mp4"])).all() and (ev["timeline"] == "default").all()
    assert ev["duration"].iloc[0] == pytest.approx(5.0, abs=0.1)


def test_events_from_audio_with_an_asr_callable(media):
    calls = []

    def asr(path):
        calls.append(path)
        return [{"text": "hello", "start": 0.5, "duration": 0.4}, {"text": "world", "start": 1.0, "duration": 0.5}]

    ev = get_events_dataframe(audio_path=media["wav"], asr=asr)
    assert calls == [media["wav"]]
    assert list(ev["type"]) == ["Audio", "Word", "Word"]
    assert ev["duration"].iloc[0] == pytest.approx(5.3)
    assert list(ev["context"].iloc[1:]) == ["hello", "hello world"]


def test_words_from_chunks_drops_empty_fills_ends_and_clips_to_the_audio():
    chunks = [{"text": " world", "timestamp": (1.0, None)}, {"text": "hello", "timestamp": (0.2, 0.6)},
              {"text": "  ", "timestamp": (0.7, 0.8)}, {"text": "late", "timestamp": (2.8, 3.4)},
              {"text": "past", "timestamp": (3.0, 3.2)}, {"text": "nan", "timestamp": (float("nan"), 1.0)}]
    words = words_from_chunks(chunks, offset=10.0, max_s=3.0)
    assert [w["text"] for w in words] == ["hello", "world", "late"]
    np.testing.assert_allclose([w["start"] for w in words], [10.2, 11.0, 12.8])
    # "world" has no end: it runs to the next word; "late" ends with the audio.
    np.testing.assert_allclose([w["duration"] for w in words], [0.4, 1.8, 0.2], atol=1e-9)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # from transformers' word alignment on the tiny model's short output
def test_events_from_audio_with_a_real_asr_pipeline(media, tmp_path):
    """The transformers pipeline with word timestamps, run on a tiny random Whisper: its words become Word
    events inside the audio, in time order, with their context."""
    model_dir = make_tiny_whisper(tmp_path / "whisper")
    words = transcribe_words(media["wav"], str(model_dir), device="cpu")
    assert words, "the pipeline returned no words"
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and min(starts) >= 0.0
    assert all(w["start"] + w["duration"] <= media["wav_s"] + 1e-6 and w["duration"] >= 0 for w in words)
    ev = get_events_dataframe(audio_path=media["wav"], asr_model=str(model_dir))
    assert list(ev["type"]) == ["Audio"] + ["Word"] * len(words)
    np.testing.assert_allclose(ev["start"].iloc[1:], starts)


def test_events_from_text_at_a_speaking_rate_and_from_timings(media, tmp_path):
    ev = get_events_dataframe(text_path=media["txt"], words_per_second=4.0)
    words = ev[ev["type"] == "Word"]
    assert len(words) == 12 and list(ev["type"].unique()) == ["Word"]
    np.testing.assert_allclose(words["start"], np.arange(12) * 0.25)
    np.testing.assert_allclose(words["duration"], 0.25)
    assert words["context"].iloc[2] == " ".join(words["text"].iloc[:3])
    timed = get_events_dataframe(text_path=media["txt"], word_timings=word_file(tmp_path))
    assert list(timed["text"]) == ["the", "cat", "sat", "down"]
    np.testing.assert_allclose(timed["duration"], [0.3, 0.5, 0.4, 0.5])


def test_word_timings_from_textgrid(tmp_path):
    tg = tmp_path / "w.TextGrid"
    tg.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 2\ntiers? <exists>\n'
                  'size = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n        name = "words"\n'
                  '        xmin = 0\n        xmax = 2\n        intervals: size = 3\n'
                  '        intervals [1]:\n            xmin = 0\n            xmax = 0.5\n            text = "sp"\n'
                  '        intervals [2]:\n            xmin = 0.5\n            xmax = 1.25\n            text = "hello"\n'
                  '        intervals [3]:\n            xmin = 1.25\n            xmax = 2\n            text = "there"\n')
    assert read_word_timings(tg) == [{"text": "hello", "start": 0.5, "duration": 0.75},
                                     {"text": "there", "start": 1.25, "duration": 0.75}]


@pytest.mark.parametrize("kw,err", [({}, "exactly one"), ({"text_path": "a.pdf"}, "ending in"),
                                    ({"audio_path": "missing.wav"}, "no such file")])
def test_bad_arguments(kw, err):
    with pytest.raises((ValueError, FileNotFoundError), match=err):
        get_events_dataframe(**kw)
