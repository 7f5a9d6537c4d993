"""Duration, frame rate and sample rate of stimulus files (the fields TRIBE probes for Video/Audio events).

Video is probed with PyAV (``pip install av``, part of the ``extract`` extra); ``.wav`` files are read
with the standard library ``wave`` module and fall back to PyAV for non-PCM encodings.
Results are cached per (path, size, mtime): Lahner2024 runs show the same 3 s clips again and again.
"""

from __future__ import annotations

import functools
import wave
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MediaError", "VideoInfo", "AudioInfo", "probe_video", "probe_audio", "clear_cache"]


class MediaError(ValueError):
    """A stimulus file is missing or cannot be decoded (the message names the file)."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds
    fps: float
    has_audio: bool
    audio_rate: float | None  # Hz of the first audio stream, None without one


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: float
    channels: int


def _key(path) -> tuple[str, int, int]:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: stimulus file not found")
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _import_av(path):
    try:
        import av
    except ImportError as exc:
        raise MediaError(f"{path}: reading media needs PyAV; install it with `pip install av` "
                         "(or `pip install 'nforge_jax[extract]'`)") from exc
    return av


def _first_stream(path: str, streams, kind: str):
    if not streams:
        raise MediaError(f"{path}: no {kind} stream in the file")
    return streams[0]


def _header_duration(av, container, stream) -> float | None:
    """Seconds from the container header, else from the stream's; None when neither says."""
    if container.duration is not None:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe_video(path) -> VideoInfo:
    """Duration (container duration, else the video stream's), fps and audio presence of a video file."""
    return _probe_video(*_key(path))


@functools.lru_cache(maxsize=4096)
def _probe_video(path: str, size: int, mtime: int) -> VideoInfo:
    av = _import_av(path)
    try:
        with av.open(path) as container:
            vs = _first_stream(path, container.streams.video, "video")
            duration = _header_duration(av, container, vs)
            rate = vs.average_rate or vs.base_rate or vs.guessed_rate
            fps = float(rate) if rate else None
            if duration is None or fps is None:
                # no header information: count frames
                n, last = 0, 0.0
                for frame in container.decode(vs):
                    n += 1
                    if frame.time is not None:
                        last = float(frame.time)
                if n == 0:
                    raise MediaError(f"{path}: the video stream has no decodable frames")
                if fps is None:
                    fps = (n - 1) / last if last > 0 else 1.0
                if duration is None:
                    duration = n / fps
            audios = container.streams.audio
            audio_rate = float(audios[0].rate) if audios and audios[0].rate else None
            return VideoInfo(duration=float(duration), fps=float(fps), has_audio=bool(audios), audio_rate=audio_rate)
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises InvalidDataError and friends for corrupt files
        raise MediaError(f"{path}: cannot decode video ({type(exc).__name__}: {exc})") from exc


def probe_audio(path) -> AudioInfo:
    """Duration, sample rate and channel count of an audio file."""
    return _probe_audio(*_key(path))


@functools.lru_cache(maxsize=4096)
def _probe_audio(path: str, size: int, mtime: int) -> AudioInfo:
    if path.lower().endswith(".wav"):
        try:
            with wave.open(path, "rb") as w:
                rate = w.getframerate()
                if rate <= 0:
                    raise MediaError(f"{path}: WAV header gives sample rate {rate}")
                return AudioInfo(duration=w.getnframes() / rate, sample_rate=float(rate), channels=w.getnchannels())
        except MediaError:
            raise
        except (wave.Error, EOFError, OSError):
            pass  # not plain PCM (float / extensible): let FFmpeg read it
    av = _import_av(path)
    try:
        with av.open(path) as container:
            st = _first_stream(path, container.streams.audio, "audio")
            duration = _header_duration(av, container, st)
            if duration is None:
                duration = sum(f.samples for f in container.decode(st)) / st.rate
            return AudioInfo(duration=float(duration), sample_rate=float(st.rate), channels=int(st.channels))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from exc


def clear_cache() -> None:
    """Forget probed files (e.g. after rewriting them in place with the same size and mtime)."""
    _probe_video.cache_clear()
    _probe_audio.cache_clear()

