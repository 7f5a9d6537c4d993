"""Decoding stimulus media with PyAV (FFmpeg inside the wheel): audio samples and video frames.

- :func:`read_audio` — the first audio stream of any file FFmpeg reads (a .wav, an .mp3, or the sound
  track of a video), as mono float32 in [-1, 1] at a chosen sample rate, optionally a time span of it.
- :func:`resample_audio` — polyphase sample-rate conversion (scipy ``resample_poly``).
- :func:`read_video_frames` — the frames shown at given times (the last frame whose presentation time is
  at or before each time), each passed through an optional ``transform`` as soon as it is decoded, so a
  long high-resolution video never sits in memory.
- :class:`VideoFrameReader` — the same answers for many reads of one file whose times move forward (the
  clips of a chunk): one forward pass, each frame decoded and transformed once.
- :func:`extract_audio_track` — the sound track of a video written to a 16-bit PCM .wav (atomic write).

Every failure is a :class:`~nforge_jax.data.studies.probe.MediaError` naming the file.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import wave
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from nforge_jax.data.studies.probe import MediaError, probe_audio, probe_video

__all__ = ["MediaError", "read_audio", "resample_audio", "read_video_frames", "VideoFrameReader", "extract_audio_track",
           "probe_audio", "probe_video"]


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: media file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    try:
        import av
    except ImportError as exc:
        raise MediaError(f"{path}: decoding media needs PyAV; install it with `pip install av` "
                         "(or `pip install 'nforge_jax[extract]'`)") from exc
    try:
        return av, av.open(str(path))
    except Exception as exc:  # InvalidDataError, FileNotFoundError from FFmpeg...
        raise MediaError(f"{path}: cannot open as audio/video ({type(exc).__name__}: {exc})") from exc


def resample_audio(samples: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Resample along the last axis from ``from_rate`` to ``to_rate`` Hz (polyphase, Kaiser window).

    The output has ``round(n * to_rate / from_rate)`` samples. Same rate: returned unchanged (as float32).
    """
    samples = np.asarray(samples, np.float32)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"resample_audio: rates must be > 0, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or samples.shape[-1] == 0:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(float(to_rate) / float(from_rate)).limit_denominator(10000)
    out = resample_poly(samples, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)
    n = int(round(samples.shape[-1] * float(to_rate) / float(from_rate)))
    if out.shape[-1] >= n:
        return out[..., :n]
    pad = [(0, 0)] * (out.ndim - 1) + [(0, n - out.shape[-1])]
    return np.pad(out, pad)


def read_audio(path, sample_rate: float | None = 16000, *, start: float = 0.0, duration: float | None = None,
               mono: bool = True) -> tuple[np.ndarray, float]:
    """Decode the first audio stream of ``path``; returns (samples float32, rate in Hz).

    samples: (n,) mono (channels averaged) or (channels, n) when ``mono=False``. ``start``/``duration``
    (seconds) select a span (``duration=None``: to the end). ``sample_rate=None`` keeps the file's rate.
    A span past the end of the stream is cut short; an empty result raises MediaError.
    """
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"{path}: read_audio needs start >= 0 and duration > 0, got start={start}, "
                         f"duration={duration}")
    av, container = _open(path)
    with container:
        streams = container.streams.audio
        if not streams:
            raise MediaError(f"{path}: no audio stream in the file (streams: "
                             f"{[s.type for s in container.streams] or 'none'})")
        stream = streams[0]
        rate = stream.rate or stream.codec_context.sample_rate
        if not rate:
            raise MediaError(f"{path}: the audio stream has no sample rate")
        try:
            if start > 0:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            resampler = av.AudioResampler(format="fltp")
            # samples [round(rate * start), + round(rate * duration)), as soundfile's start/frames read them
            first = int(round(start * rate))
            end = None if duration is None else first + int(round(duration * rate))
            chunks, pos = [], 0
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for f in resampler.resample(frame):
                        data = f.to_ndarray()  # (channels, n) planar float32
                        if f.pts is not None and f.time_base is not None:
                            pos = int(round(float(f.pts * f.time_base) * rate))
                        lo, hi = pos, pos + data.shape[1]
                        pos = hi
                        a, b = max(lo, first), hi if end is None else min(hi, end)
                        if b > a:
                            chunks.append(data[:, a - lo:b - lo])
                if end is not None and pos >= end:
                    break
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from exc
    if not chunks:
        span = "" if start == 0 and duration is None else f" in [{start}, {'end' if duration is None else start + duration}) s"
        raise MediaError(f"{path}: no audio samples{span}")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    if mono:
        samples = samples.mean(axis=0)
    if sample_rate is not None and sample_rate != rate:
        samples = resample_audio(samples, rate, sample_rate)
        rate = sample_rate
    return samples, float(rate)


def read_video_frames(path, times: Sequence[float], transform: Callable[[np.ndarray], np.ndarray] | None = None,
                      *, past_end: bool = False):
    """Frames shown at ``times`` (seconds from the start of the file), stacked in the order of ``times``.

    The frame shown at t is the last decoded frame whose presentation time is <= t, with moviepy's
    tolerance of 1e-5 frame (the first frame for t before it, the last frame for t past the end). Each
    selected frame (H, W, 3) uint8 RGB goes through ``transform`` once, however many times select it.
    Decoding starts at the key frame before min(times) and stops after max(times).

    ``past_end=True``: returns (frames, mask), mask True for the times at or after the end of the last
    frame (its presentation time + 1 / frame rate), the times moviepy has no frame for.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    if times.size == 0:
        raise ValueError(f"{path}: read_video_frames needs at least one time")
    if not np.isfinite(times).all():
        raise ValueError(f"{path}: read_video_frames got non-finite times")
    order = np.argsort(times, kind="stable")
    av, container = _open(path)
    picked: dict[int, np.ndarray] = {}  # frame number (decode order) -> transformed frame
    assign = np.empty(times.size, np.int64)
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        eps = 1e-5 / rate if rate > 0 else 1e-6  # moviepy picks frame int(fps * t + 1e-5)
        end = np.inf  # the end of the last frame, known once decoding runs out
        t_min = float(times[order[0]])
        try:
            if t_min > 1.0 and stream.time_base is not None:
                container.seek(int((t_min - 0.5) / stream.time_base), stream=stream, backward=True)
            i, n_frames, prev, prev_id = 0, 0, None, -1

            def take(frame, fid):
                if fid not in picked:
                    rgb = frame.to_ndarray(format="rgb24")
                    picked[fid] = rgb if transform is None else transform(rgb)
                return fid

            for frame in container.decode(stream):
                ft = float(frame.time) if frame.time is not None else (n_frames / float(stream.average_rate or 1))
                n_frames += 1
                fid = n_frames - 1
                while i < times.size and times[order[i]] < ft - eps:
                    # t falls before this frame: the previous frame is on screen (or, before the first, this one)
                    assign[order[i]] = take(prev, prev_id) if prev is not None else take(frame, fid)
                    i += 1
                if i == times.size:
                    break
                prev, prev_id = frame, fid
            if n_frames == 0:
                raise MediaError(f"{path}: the video stream has no decodable frames")
            if i < times.size and rate > 0:  # decoding ran out: prev is the last frame
                end = ft + 1.0 / rate
            while i < times.size:
                assign[order[i]] = take(prev, prev_id)
                i += 1
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{path}: cannot decode video ({type(exc).__name__}: {exc})") from exc
    ids = sorted(picked)
    index = {fid: k for k, fid in enumerate(ids)}
    stack = np.stack([picked[fid] for fid in ids])
    frames = stack[[index[fid] for fid in assign]]
    return (frames, times >= end - eps) if past_end else frames


class VideoFrameReader:
    """Frames shown at given times, as :func:`read_video_frames` answers them, for a sequence of reads of one
    file whose smallest time never goes back (the clips of a chunk, oldest first; adjacent 64-frame clips
    share 56 frames). The file is decoded once, forward from the key frame before the first time asked; each
    frame is transformed once, when a read first selects it, and let go once it is older than the frame on
    screen at the smallest time of the latest read. ``n_decoded`` / ``n_transformed`` count the frames."""

    def __init__(self, path, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        self.path, self.transform = path, transform
        _, self._container = _open(path)
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(f"{path}: no video stream in the file")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._rate = float(self._stream.average_rate or self._stream.guessed_rate or 0)
        self._eps = 1e-5 / self._rate if self._rate > 0 else 1e-6  # moviepy's tolerance, as read_video_frames
        self._frames = None  # the decoder's iterator, made at the first read (it seeks there)
        self._ids, self._times, self._raw = [], [], []  # decoded frames kept: number, time, PyAV frame
        self._done: dict[int, np.ndarray] = {}  # frame number -> transformed frame
        self._end = np.inf  # the end of the last frame, once decoding has run out
        self._floor = -np.inf
        self.n_decoded = self.n_transformed = 0

    def close(self) -> None:
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _decode_until(self, t_max: float) -> None:
        """Decode forward until a frame starts after ``t_max`` (every time up to it is then placed)."""
        try:
            if self._frames is None:
                t_min = self._floor
                if t_min > 1.0 and self._stream.time_base is not None:
                    self._container.seek(int((t_min - 0.5) / self._stream.time_base), stream=self._stream,
                                         backward=True)
                self._frames = self._container.decode(self._stream)
            while not self._times or self._times[-1] - self._eps <= t_max:
                frame = next(self._frames, None)
                if frame is None:
                    if self.n_decoded == 0:
                        raise MediaError(f"{self.path}: the video stream has no decodable frames")
                    if self._rate > 0:
                        self._end = self._times[-1] + 1.0 / self._rate
                    return
                self.n_decoded += 1
                ft = float(frame.time) if frame.time is not None else ((self.n_decoded - 1) / float(
                    self._stream.average_rate or 1))
                self._ids.append(self.n_decoded - 1)
                self._times.append(ft)
                self._raw.append(frame)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{self.path}: cannot decode video ({type(exc).__name__}: {exc})") from exc

    def _take(self, k: int) -> np.ndarray:
        fid = self._ids[k]
        if fid not in self._done:
            rgb = self._raw[k].to_ndarray(format="rgb24")
            self._done[fid] = rgb if self.transform is None else self.transform(rgb)
            self.n_transformed += 1
        return self._done[fid]

    def read(self, times: Sequence[float]):
        """(frames stacked in the order of ``times``, mask of the times at or after the end of the last frame),
        as ``read_video_frames(path, times, transform, past_end=True)``."""
        times = np.asarray(times, np.float64).reshape(-1)
        if times.size == 0 or not np.isfinite(times).all():
            raise ValueError(f"{self.path}: VideoFrameReader.read needs finite times, got {times.size} of them")
        if times.min() < self._floor:
            raise ValueError(f"{self.path}: VideoFrameReader reads forward; got {times.min()} s after "
                             f"{self._floor} s (use read_video_frames)")
        self._floor = float(times.min())
        self._decode_until(float(times.max()))
        # frame k is on screen from its time (less moviepy's tolerance) until the next frame's; before the first
        # decoded frame, the first
        starts = np.asarray(self._times) - self._eps
        picks = np.maximum(np.searchsorted(starts, times, side="right") - 1, 0)
        frames = np.stack([self._take(k) for k in picks])
        self._forget(int(picks.min()))
        return frames, times >= self._end - self._eps

    def _forget(self, keep_from: int) -> None:
        for fid in self._ids[:keep_from]:
            self._done.pop(fid, None)
        del self._ids[:keep_from], self._times[:keep_from], self._raw[:keep_from]


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """The items of ``items``, produced in a background thread up to ``depth`` ahead of the consumer (decoding
    the next block while a model runs this one); an exception in the producer is raised in the consumer."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((done, exc))

    worker = threading.Thread(target=produce, name="nforge-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = box.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()


def extract_audio_track(video_path, out_path, sample_rate: float | None = None) -> Path:
    """Write the sound track of ``video_path`` (mono) to ``out_path`` as 16-bit PCM .wav, atomically."""
    samples, rate = read_audio(video_path, sample_rate)
    if not float(rate).is_integer():
        raise MediaError(f"{video_path}: sample rate {rate} Hz is not an integer; pass sample_rate=")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{secrets.token_hex(4)}")
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    try:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes(pcm.tobytes())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def n_bins(duration: float, hz: float = 2.0) -> int:
    """Samples TRIBE gives a span of ``duration`` seconds at ``hz`` (Python round, at least 1)."""
    return max(1, int(round(duration * hz)))
