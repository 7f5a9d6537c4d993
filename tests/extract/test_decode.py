"""PyAV decoding: audio (mono, spans, rates, a video's sound track), frames at times, clear errors."""

import wave

import numpy as np
import pytest

from extract_helpers import write_mp4
from nforge_jax.extract.decode import MediaError, extract_audio_track, read_audio, read_video_frames, resample_audio


def pcm(path):
    with wave.open(str(path)) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return raw.astype(np.float64) / 32768.0


def peak_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)]


def test_wav_mono_native_rate_and_span(media):
    expected = pcm(media["wav"]).mean(1)
    x, rate = read_audio(media["wav"], None)
    assert rate == 22050 and x.dtype == np.float32 and x.shape == expected.shape
    np.testing.assert_allclose(x, expected, atol=1e-6)
    part, _ = read_audio(media["wav"], None, start=1.0, duration=2.0)
    np.testing.assert_allclose(part, expected[22050:66150], atol=1e-6)
    both, _ = read_audio(media["wav"], None, mono=False)
    assert both.shape == (2, expected.size)


def test_resampling_keeps_length_and_pitch(media):
    x, rate = read_audio(media["wav"], 16000)
    assert rate == 16000 and x.size == round(5.3 * 22050 * 16000 / 22050)
    assert abs(peak_hz(x, 16000) - 220) < 2
    t = np.arange(48000) / 48000
    y = resample_audio(np.sin(2 * np.pi * 440 * t), 48000, 16000)
    assert y.shape == (16000,) and abs(peak_hz(y, 16000) - 440) < 2
    const = resample_audio(np.full(4410, 0.5), 44100, 16000)
    np.testing.assert_allclose(const[100:-100], 0.5, atol=1e-3)


def test_sound_track_of_a_video(media, tmp_path):
    x, rate = read_audio(media["mp4"], 16000)
    assert rate == 16000 and abs(x.size - 5.0 * 16000) <= 2048  # AAC priming/padding
    assert abs(peak_hz(x, 16000) - 440) < 2
    wav = extract_audio_track(media["mp4"], tmp_path / "out" / "clip.wav")
    back, r = read_audio(wav, None)
    assert r == 16000 and back.size == x.size
    np.testing.assert_allclose(back, x, atol=1 / 16000)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip.wav"]


def test_frames_at_times(tmp_path):
    path = write_mp4(tmp_path / "ramp.mp4", n_frames=40, fps=8, audio_rate=None)
    times = [4.99, 0.0, 0.1, 0.124, 0.125, 0.13, 1.0, 10.0, 0.1]
    calls = []

    def transform(frame):
        calls.append(1)
        return frame[:2, :2].astype(np.float32)

    frames = read_video_frames(path, times, transform=transform)
    # frame shown at t = floor(t * 8) at 8 fps (frame i is grey 6 * i); past the end: the last frame
    expected_index = [39, 0, 0, 0, 1, 1, 8, 39, 0]
    assert frames.shape == (len(times), 2, 2, 3)
    np.testing.assert_allclose(frames[:, 0, 0, 0], 6 * np.array(expected_index), atol=3)
    assert len(calls) == len(set(expected_index))  # each distinct frame transformed once
    full = read_video_frames(path, [2.0])
    assert full.shape == (1, 40, 48, 3) and full.dtype == np.uint8
    assert abs(int(full[0, 5, 5, 0]) - 6 * 16) <= 3


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage"])
def test_unreadable_media_named(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a video" * 50)
    needle = {"missing": "not found", "empty": "empty", "garbage": "cannot"}[kind]
    with pytest.raises(MediaError, match=needle) as err:
        read_video_frames(path, [0.0])
    assert str(path) in str(err.value)
    with pytest.raises(MediaError, match=needle):
        read_audio(path)


def test_missing_streams_named(media):
    with pytest.raises(MediaError, match="no video stream") as err:
        read_video_frames(media["wav"], [0.0])
    assert str(media["wav"]) in str(err.value)
    with pytest.raises(MediaError, match="no audio samples"):
        read_audio(media["wav"], None, start=10.0, duration=1.0)


@pytest.fixture(scope="module")
def mp4_25fps(tmp_path_factory):
    # 10 s at 25 fps (grey 6 i mod 240): the frame rate of films, clips sampled at 16 fps
    path = tmp_path_factory.mktemp("reader") / "film.mp4"
    return write_mp4(path, n_frames=250, fps=25, size=(16, 16), audio_rate=0)


def test_frame_reader_answers_as_read_video_frames(mp4_25fps):
    from nforge_jax.extract.decode import VideoFrameReader
    from nforge_jax.extract.video import clip_times

    def transform(frame):
        return frame[:2, :2].astype(np.float32)

    # the clips of one 9.5 s chunk from 0.3 s (8 frames of 4 s each), in blocks of 3, then times past the end
    times = clip_times(9.5, 8, 4.0, 2.0) + 0.3
    blocks = [times[i:i + 3] for i in range(0, len(times), 3)] + [np.array([[9.9, 10.0, 10.5, 11.0]])]
    with VideoFrameReader(mp4_25fps, transform) as reader:
        for block in blocks:
            got, got_end = reader.read(block.reshape(-1))
            want, want_end = read_video_frames(mp4_25fps, block.reshape(-1), transform, past_end=True)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_end, want_end)
        assert got_end.tolist() == [False, True, True, True]
        # each frame decoded once for all clips (every frame of the file, once), far fewer than 8 per clip
        assert reader.n_decoded == 250
        assert reader.n_transformed <= 250 and reader.n_transformed < 8 * len(times) / 4
        with pytest.raises(ValueError, match="reads forward"):
            reader.read([1.0])


def test_frame_reader_seeks_to_its_first_time(mp4_25fps):
    from nforge_jax.extract.decode import VideoFrameReader

    with VideoFrameReader(mp4_25fps) as reader:
        got, _ = reader.read([6.0, 6.04, 7.5])
        assert reader.n_decoded < 250 - 100  # started near 6 s, not at the first frame
    np.testing.assert_array_equal(got, read_video_frames(mp4_25fps, [6.0, 6.04, 7.5]))


def test_prefetch_order_errors_and_early_stop():
    import threading

    from nforge_jax.extract.decode import prefetch

    assert list(prefetch(iter(range(20)))) == list(range(20))

    def failing():
        yield 1
        raise MediaError("clip.mp4: cannot decode video")

    out = []
    with pytest.raises(MediaError, match="clip.mp4"):
        for item in prefetch(failing()):
            out.append(item)
    assert out == [1]
    for _ in prefetch(iter(range(1000)), depth=2):  # the consumer stops early: the producer thread ends
        break
    assert not [t for t in threading.enumerate() if t.name == "nforge-prefetch"]
