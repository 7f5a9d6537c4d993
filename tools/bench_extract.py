"""Extraction benchmarks beside TRIBE v2's own extractors (neuralset 0.0.2), on tiny random models of the released
shapes (tests/extract/reference_extractors.py), the same media, one after the other in one run. Called by
`python tools/bench.py extract` (see its --help); every function returns both sides' seconds and their ratio.

- video: the textured 25 fps film of the parity tests, ``seconds`` long, V-JEPA 2 of 40 layers (64 frames a clip);
- audio: ``seconds`` of 44.1 kHz stereo noise, Wav2Vec-BERT 2.0 of 24 layers, chunks of 60 s;
- end to end: a film with a sound track and one word every 0.4 s; ours (the three extractors, then the JAX
  encoder) vs neuralset's three extractors followed by the PyTorch reference encoder window by window;
- dtype: our features and predictions in bfloat16 against float32, as max relative differences.

Released size: every function takes the models to use (a directory or a hub id already in the local cache,
``model_dir`` / ``models``) instead of the tiny ones, and the ``device`` both sides run on
(``python tools/bench.py extract --text-model meta-llama/Llama-3.2-3B ... --device cuda``, BUILD.md).
"""

from __future__ import annotations

import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "extract")]

# the encoder of the end-to-end benchmark: small, reading the extractors' features (2 layer groups of their width)
E2E_BRAIN = dict(n_outputs=20484, n_output_timesteps=100, hidden=96, depth=2, heads=3, low_rank_head=32, n_subjects=0)
RELEASE_LAYERS = dict(layers=(0.5, 0.75, 1.0), aggregation="group_mean")


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _video_config(model_dir, batch_size: int, dtype: str = "float32"):
    from nforge_jax.extract.video import VideoConfig

    return VideoConfig(model_id=str(model_dir), cache_n_layers=20, token_aggregation="mean", clip_s=4.0,
                       batch_size=batch_size, **RELEASE_LAYERS)


def _ours_video(model_dir, events, n_steps, batch_size, dtype="float32", device="cpu"):
    from nforge_jax.extract.video import VideoExtractor

    ex = VideoExtractor(_video_config(model_dir, batch_size), device=device, dtype=dtype)
    grid = ex.extract(events, n_steps)
    return grid, {**ex.decode_counts, "clip_batch": ex.clip_batch}


def _model_name(model_dir, tiny: str) -> str:
    return tiny if model_dir is None else str(model_dir)


def bench_extract_video(seconds: float = 20.0, batch_size: int | None = None, model_dir=None, device: str = "cpu"
                        ) -> dict:
    """Our VideoExtractor vs neuralset's HuggingFaceVideo on a ``seconds`` film; times include model loading."""
    from reference_extractors import neuralset_video_features, write_release_video_model, write_textured_mp4

    from nforge_jax.data.events import make_events

    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir or write_release_video_model(Path(tmp) / "vjepa2_l40")
        film = write_textured_mp4(Path(tmp) / "film.mp4", n_frames=int(round(25 * seconds)))
        events = make_events([{"type": "Video", "start": 0.0, "duration": float(seconds), "offset": 0.0,
                               "filepath": str(film), "timeline": "t"}])
        n_steps = int(round(2 * seconds))
        (grid, counts), ours = _timed(_ours_video, model, events, n_steps, batch_size, device=device)
        (ref, *_), base = _timed(neuralset_video_features, model, film, device=device)
    ref = np.moveaxis(ref, -1, 0)
    return {"config": {"seconds": seconds, "fps": 25, "frames_per_clip": 64, "batch_size": counts["clip_batch"],
                       "model": _model_name(model_dir, "V-JEPA 2, 40 layers, width 16, crop 32"), "device": device},
            "ours_s": ours, "neuralset_s": base, "speedup": base / ours,
            "frames_decoded_per_clip": counts["frames_decoded"] / counts["clips"],
            "frames_preprocessed_per_clip": counts["frames_preprocessed"] / counts["clips"],
            "release_frames_read_per_clip": 64, "max_rel": _rel(grid[: len(ref)], ref)}


def write_noise_wav(path, seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0):
    """16-bit PCM noise with a slow loudness envelope, ``channels`` channels."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    env = 0.3 + 0.2 * np.sin(2 * np.pi * np.arange(n) / (rate * 3.0))
    x = (rng.standard_normal((n, channels)) * env[:, None] * 8000).clip(-32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def _ours_audio(model_dir, events, n_steps, batch_size, dtype="float32", device="cpu"):
    from nforge_jax.extract.audio import AudioConfig, AudioExtractor

    cfg = AudioConfig(model_id=str(model_dir), batch_size=batch_size, **RELEASE_LAYERS)
    return AudioExtractor(cfg, device=device, dtype=dtype).extract(events, n_steps)


def bench_extract_audio(seconds: float = 240.0, batch_size: int = 1, model_dir=None, device: str = "cpu") -> dict:
    """Our AudioExtractor vs neuralset's Wav2VecBert on ``seconds`` of 44.1 kHz stereo (its 100 s segments)."""
    from reference_extractors import audio_extractor, segments_features, write_release_audio_model

    from nforge_jax.data.events import make_events

    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir or write_release_audio_model(Path(tmp) / "w2vbert")
        wav = write_noise_wav(Path(tmp) / "sound.wav", seconds)
        events = make_events([{"type": "Audio", "start": 0.0, "duration": float(seconds), "offset": 0.0,
                               "filepath": str(wav), "timeline": "t", "frequency": 44100.0}])
        grid, ours = _timed(_ours_audio, model, events, int(round(2 * seconds)), batch_size, device=device)
        ref, base = _timed(segments_features, audio_extractor(model, Path(tmp) / "ns-cache", device=device), events)
    n = min(len(ref), len(grid))
    return {"config": {"seconds": seconds, "rate": 44100, "channels": 2, "batch_size": batch_size,
                       "model": _model_name(model_dir, "Wav2Vec-BERT 2.0, 24 layers, width 16"), "device": device},
            "ours_s": ours, "neuralset_s": base, "speedup": base / ours, "max_rel": _rel(grid[:n], ref[:n])}


def write_movie(path, seconds: float, fps: int = 25, rate: int = 44100):
    """The textured film (tests' write_textured_mp4 frames) with a stereo AAC noise track of the same length."""
    import av

    from reference_extractors import VIDEO_SIZE

    h, w = VIDEO_SIZE
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = w, h, "yuv420p", 4_000_000
        st = c.add_stream("aac", rate=rate)
        st.layout = "stereo"
        for i in range(int(round(seconds * fps))):
            img = np.stack([(xx * 255 // (w - 1) + 7 * i) % 256, yy * 255 // (h - 1),
                            rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
            for pk in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
        n = int(seconds * rate)
        for k in range(0, n, 1024):
            x = (0.1 * rng.standard_normal((2, min(1024, n - k)))).astype(np.float32)
            fr = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = rate, k
            for pk in st.encode(fr):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    return path


def _movie_events(film, seconds: float):
    """A word every 0.5 s (sentences with punctuation, numbers and contractions, TRIBE's contexts) over the film's
    Video event and an Audio event of its sound track (written to a .wav first, outside the timed part), one
    timeline."""
    import pandas as pd

    from bench import text_timeline
    from nforge_jax.data.events import make_events

    from nforge_jax.extract.decode import extract_audio_track

    words = text_timeline(int(2 * seconds) - 1)
    # the sound track as a .wav, as TRIBE's events point at it (neuralset reads Audio events with soundfile)
    wav = extract_audio_track(film, Path(film).with_suffix(".wav"))
    with wave.open(str(wav)) as w:  # the track's own length (AAC pads a little), as TRIBE's events give it
        sound_s = w.getnframes() / w.getframerate()
    media = make_events([{"type": kind, "start": 0.0, "duration": float(dur), "offset": 0.0,
                          "filepath": str(path), "timeline": "bench"}
                         for kind, path, dur in (("Video", film, seconds), ("Audio", wav, sound_s))])
    return pd.concat([words, media], ignore_index=True)


def _e2e_models(tmp: Path, given: dict | None = None):
    """The three extractor models (``given`` ones, the tiny ones for the rest), a release-layout checkpoint of
    the small encoder reading their features (PyTorch reference) and its conversion (ours)."""
    from transformers import AutoConfig

    from bench import _tiny_release_llama
    from helpers import make_release
    from reference_extractors import write_release_audio_model, write_release_video_model

    from nforge_jax.convert.tribev2 import convert_tribev2
    from nforge_jax.extract.models import resolve_model
    from nforge_jax.model.checkpoint import load_encoder

    tiny = {"text": lambda: _tiny_release_llama(tmp / "llama"), "audio": lambda: write_release_audio_model(tmp / "w2vbert"),
            "video": lambda: write_release_video_model(tmp / "vjepa2_l40")}
    given = {m: v for m, v in (given or {}).items() if v}
    models = {m: resolve_model(given[m], m) if m in given else make() for m, make in tiny.items()}
    dims = {m: (2, int(AutoConfig.from_pretrained(path).hidden_size)) for m, path in models.items()}
    ref = make_release(tmp / "release", feature_dims=dims, **E2E_BRAIN)
    convert_tribev2(tmp / "release", tmp / "ckpt")
    return models, ref, load_encoder(tmp / "ckpt")[0]


def ours_media_to_predictions(models, encoder, events, n_steps: int, batch_sizes=(4, 1, None), dtype="float32",
                              device="cpu"):
    """Our three extractors (release recipe, text by the release rule) and the JAX encoder -> ((T, V), features)."""
    from nforge_jax.extract.text import TextConfig, TextExtractor
    from nforge_jax.inference.model import NForgeModel

    text = TextExtractor(TextConfig(model_id=str(models["text"]), cache_n_layers=20, batch_size=batch_sizes[0],
                                    **RELEASE_LAYERS), device=device, dtype=dtype)
    feats = {"text": text.extract(events, n_steps),
             "audio": _ours_audio(models["audio"], events, n_steps, batch_sizes[1], dtype, device),
             "video": _ours_video(models["video"], events, n_steps, batch_sizes[2], dtype, device)[0]}
    return NForgeModel(encoder).predict_features(feats), feats


def reference_media_to_predictions(models, ref, events, tmp: Path, device: str = "cpu"):
    """neuralset 0.0.2's three extractors and the PyTorch reference encoder, one 100 s window at a time."""
    import torch

    from helpers import to_torch_layout
    from reference_extractors import (audio_extractor, neuralset_video_features, ns_events, release_chunks,
                                      segments_features, text_extractor)

    feats = {"text": segments_features(text_extractor(models["text"], tmp / "ns-text", device=device), events),
             "audio": segments_features(audio_extractor(models["audio"], tmp / "ns-audio", device=device), events)}
    chunks = release_chunks(ns_events(events[events["type"] == "Video"]))  # each piece extracted on its own
    feats["video"] = np.concatenate([np.moveaxis(neuralset_video_features(
        models["video"], c.filepath, span=(c.offset, c.duration), device=device)[0], -1, 0)
        for c in chunks.itertuples()])
    window = 2 * E2E_BRAIN["n_output_timesteps"]
    n = max(len(v) for v in feats.values())
    n_windows = -(-n // window)
    outs = []
    ref = ref.to(device)
    with torch.inference_mode():
        for w in range(n_windows):
            x = {}
            for m, v in feats.items():
                part = np.zeros((1, window, *v.shape[1:]), np.float32)
                chunk = v[w * window:(w + 1) * window]
                part[0, :len(chunk)] = chunk
                x[m] = part
            x = {m: v.to(device) for m, v in to_torch_layout(x).items()}
            outs.append(ref(x).float().cpu().numpy()[0].T)  # (n_output_timesteps, V)
    return np.concatenate(outs), feats


def bench_extract_e2e(seconds: float = 120.0, models: dict | None = None, device: str = "cpu") -> dict:
    """Media -> predictions on a ``seconds`` film with speech, ours vs neuralset + the PyTorch reference."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models, ref, encoder = _e2e_models(tmp, models)
        film = write_movie(tmp / "movie.mp4", seconds)
        events = _movie_events(film, seconds)
        n_steps = int(round(2 * seconds))
        (pred, feats), ours = _timed(ours_media_to_predictions, models, encoder, events, n_steps, device=device)
        (ref_pred, ref_feats), base = _timed(reference_media_to_predictions, models, ref, events, tmp, device)
    n = min(len(pred), len(ref_pred))
    return {"config": {"seconds": seconds, "words": int(2 * seconds) - 1, "fps": 25, "audio": "44.1 kHz stereo AAC",
                       "encoder": f"hidden {E2E_BRAIN['hidden']}, depth {E2E_BRAIN['depth']}, 20484 outputs",
                       "models": {m: str(v) for m, v in models.items()}, "device": device},
            "ours_s": ours, "reference_s": base, "speedup": base / ours,
            "features_max_rel": {m: _rel(feats[m][:n_steps], ref_feats[m][:n_steps]) for m in feats},
            "predictions_max_rel": _rel(pred[:n], ref_pred[:n])}


def bench_extract_dtype(seconds: float = 20.0, dtype: str = "bfloat16", models: dict | None = None,
                        device: str = "cpu") -> dict:
    """Our features and the predictions they give in ``dtype`` against float32, same models and film."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models, _, encoder = _e2e_models(tmp, models)
        film = write_movie(tmp / "movie.mp4", seconds)
        events = _movie_events(film, seconds)
        n_steps = int(round(2 * seconds))
        (p32, f32), t32 = _timed(ours_media_to_predictions, models, encoder, events, n_steps, device=device)
        (plow, flow), tlow = _timed(ours_media_to_predictions, models, encoder, events, n_steps, dtype=dtype,
                                    device=device)
    return {"config": {"seconds": seconds, "dtype": dtype, "device": device}, "float32_s": t32, f"{dtype}_s": tlow,
            "features_max_rel": {m: _rel(flow[m], f32[m]) for m in f32}, "predictions_max_rel": _rel(plow, p32)}
