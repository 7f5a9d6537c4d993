"""`nforge predict --media` / `NForgeModel.predict_media`: media files -> events -> store -> predictions -> per-file
viewer page and maps; a rerun computes nothing, an interrupted run resumes, bad inputs are refused up front."""

import json
from fractions import Fraction

import numpy as np
import pytest
from flax import nnx

from extract_helpers import WORDS, write_mp4
from nforge_jax.cli import build_parser, main as nforge
from nforge_jax.data.store import FeatureStore
from nforge_jax.extract.audio import AudioConfig
from nforge_jax.extract.recipe import ExtractConfig
from nforge_jax.extract.text import TextConfig
from nforge_jax.extract.video import VideoConfig
from nforge_jax.inference.attribution import ModalityAttributor
from nforge_jax.inference.batch import read_predictions
from nforge_jax.inference.model import NForgeModel
from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.checkpoint import save_encoder

CONFIG = EncoderConfig(feature_dims=(("text", 2, 32), ("audio", 2, 32), ("video", 1, 32)), n_outputs=20484,
                       n_output_timesteps=10, hidden=96, depth=1, heads=3, low_rank_head=16, n_subjects=1)


def recipe(models, text_model=None):
    return ExtractConfig(text=TextConfig(model_id=str(text_model or models["text"]), layers=(0.5, 1.0)),
                         audio=AudioConfig(model_id=str(models["audio"])),
                         video=VideoConfig(model_id=str(models["video"]), layers=(1.0,)))


def write_textgrid(path, words):
    """A Praat TextGrid with one "words" tier; words: [(start, stop, text)]."""
    end = words[-1][1]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "words"', "        xmin = 0", f"        xmax = {end}",
             f"        intervals: size = {len(words)}"]
    for i, (a, b, text) in enumerate(words, 1):
        lines += [f"        intervals [{i}]:", f"            xmin = {a}", f"            xmax = {b}",
                  f'            text = "{text}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def write_streamless_mp4(path):
    """A file named .mp4 that FFmpeg opens (MPEG-TS inside) holding one data stream: no video, no audio."""
    import av

    with av.open(str(path), "w", format="mpegts") as c:
        stream = c.add_data_stream()
        for i in range(3):
            packet = av.Packet(b"data")
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i * 1000, i * 1000, Fraction(1, 1000)
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("media_maps")
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), root / "ckpt",
                 metadata={"extract_recipe": recipe(tiny_models).to_dict()})
    films = root / "films"
    films.mkdir()
    write_mp4(films / "clip.mp4", n_frames=40, fps=8)  # 5 s of video with a sound track
    write_textgrid(films / "clip.TextGrid", [(0.0, 0.4, "sp")] + [(0.5 + 0.5 * i, 0.9 + 0.5 * i, WORDS[i])
                                                                  for i in range(8)])
    (films / "story.txt").write_text(" ".join(WORDS[:12]) + "\n")  # timed at 2.5 words per second
    (films / "notes.md").write_text("not a stimulus\n")  # skipped in a folder
    return root


def run(args, capsys):
    code = nforge(["predict", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_media_to_maps_then_a_rerun_computes_nothing(setup, tiny_models, capsys, monkeypatch):
    out = setup / "out"
    code, stdout, err = run(["--media", str(setup / "films"), "--checkpoint", str(setup / "ckpt"), "--out", str(out)],
                            capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("clip.mp4: ") and lines[1].startswith("story.txt: ")
    assert "text+audio+video" in lines[0] and "2 extracted, 2 predicted, 2 mapped" in lines[2]
    assert "the average subject's head of model" in lines[2]
    model = NForgeModel.from_pretrained(setup / "ckpt")
    store = FeatureStore.open(out / "store")
    assert store.timelines == ["clip.mp4", "story.txt"] and store.modalities("story.txt") == ["text"]
    # the TextGrid timed clip.mp4's words: text rows where its words are, none in the first 0.5 s
    text = np.asarray(store.features("clip.mp4", "text"), np.float32)
    assert not text[0].any() and np.abs(text[1:9]).sum(axis=(1, 2)).all()
    for name in ("clip.mp4", "story.txt"):
        folder = out / "maps" / name
        preds = np.asarray(read_predictions(out / "predictions", name))
        feats = {m: np.asarray(store.features(name, m), np.float32) for m in store.modalities(name)}
        np.testing.assert_allclose(preds, model.predict_features(feats), rtol=1e-5, atol=1e-6)
        with np.load(folder / "maps.npz") as maps:
            np.testing.assert_allclose(maps["mean_activity"], preds.mean(0), rtol=1e-5, atol=1e-7)
            shares = ModalityAttributor(model, n_steps=16).variance_shares(feats)
            for m in ("text", "audio", "video", "baseline"):
                np.testing.assert_allclose(maps[f"share_{m}"], shares[m], rtol=1e-4, atol=1e-5)
        for png in ("mean_activity.png", "variance_shares.png"):
            assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page = (folder / "viewer.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and name in page
        summary = json.loads((folder / "summary.json").read_text())
        made = summary["provenance"]
        assert made["model_sha256"] == model.fingerprint() and made["subject"] == "average"
        assert made["space"]["name"] == "fsaverage5" and made["extract_recipe"] == recipe(tiny_models).to_dict()
        marker = json.loads((out / "predictions" / "nforge_predictions.json").read_text())
        assert {k: marker[k] for k in made} == made
    assert json.loads((out / "maps" / "story.txt" / "summary.json").read_text())["variance_shares"]["audio"] == 0.0
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    def computed(*_, **__):
        raise AssertionError("a rerun computed something")

    monkeypatch.setattr("nforge_jax.extract.run.extract_timeline", computed)
    monkeypatch.setattr("nforge_jax.inference.batch._run_batches", computed)
    monkeypatch.setattr("nforge_jax.inference.attribution.store_variance_shares", computed)
    monkeypatch.setattr("nforge_jax.media.build_events", computed)
    films = setup / "films"  # the same inputs named one by one: the TextGrid pairs with its video again
    # (speed settings that change no feature do not make it a different run)
    code, stdout, err = run(["--media", *(str(films / f) for f in ("story.txt", "clip.TextGrid", "clip.mp4")),
                             "--checkpoint", str(setup / "ckpt"), "--out", str(out), "--video-batch-size", "1",
                             "--audio-batch-size", "2", "--dtype", "float32", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "0 extracted, 0 predicted, 0 mapped" in stdout
    assert {p: p.stat().st_mtime_ns for p in files} == files
    # another speaking rate for story.txt: refused before its features and predictions are replaced
    code, _, err = run(["--media", str(films), "--checkpoint", str(setup / "ckpt"), "--out", str(out),
                        "--words-per-second", "3"], capsys)
    assert code == 2 and "story.txt: differs from the input of that name" in err and "words_per_second: 2.5" in err
    assert {p: p.stat().st_mtime_ns for p in files} == files
    # another checkpoint into the same directory: refused before its store is touched
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(1)), setup / "ckpt_other",
                 metadata={"extract_recipe": json.loads((setup / "ckpt" / "config.json").read_text())["metadata"][
                     "extract_recipe"]})
    code, _, err = run(["--media", str(films), "--checkpoint", str(setup / "ckpt_other"), "--out", str(out)], capsys)
    assert code == 2 and "come from different checkpoints" in err and len(err.strip().splitlines()) == 2
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_an_interrupted_run_resumes_where_it_stopped(setup, tiny_models, monkeypatch):
    """Killed while drawing the second file's maps: the rerun extracts and predicts nothing again."""
    import nforge_jax.media as media

    model = NForgeModel.from_pretrained(setup / "ckpt")
    out = setup / "partial"
    real = media._file_outputs

    def dies_on_story(model, out, item, *args, **kw):
        if item.name == "story.txt":
            raise KeyboardInterrupt
        return real(model, out, item, *args, **kw)

    monkeypatch.setattr(media, "_file_outputs", dies_on_story)
    with pytest.raises(KeyboardInterrupt):
        model.predict_media([setup / "films"], out, progress=False)
    assert (out / "maps" / "clip.mp4" / "summary.json").is_file() and not (out / "maps" / "story.txt").exists()
    monkeypatch.setattr(media, "_file_outputs", real)
    report = model.predict_media([setup / "films"], out, progress=False)
    assert report["extract"] == {"written": [], "skipped": ["clip.mp4", "story.txt"]}
    assert report["predict"]["written"] == [] and report["maps"] == {"written": ["story.txt"], "skipped": ["clip.mp4"]}
    assert [s["name"] for s in json.loads((out / "summary.json").read_text())["files"]] == ["clip.mp4", "story.txt"]


def test_shards_share_one_output_directory(setup):
    """--shard I/N: process I takes every N-th file; the shards fill one store, prediction directory and summary."""
    model = NForgeModel.from_pretrained(setup / "ckpt")
    out = setup / "sharded"
    second = model.predict_media([setup / "films"], out, shard=(1, 2), progress=False, figures=False)
    assert [s["name"] for s in second["files"]] == ["story.txt"] and second["extract"]["written"] == ["story.txt"]
    assert sorted(p.name for p in (out / "maps" / "story.txt").iterdir()) == ["maps.npz", "summary.json"]
    first = model.predict_media([setup / "films"], out, shard=(0, 2), progress=False, figures=False)
    assert [s["name"] for s in first["files"]] == ["clip.mp4"] and first["predict"]["written"] == ["clip.mp4"]
    assert FeatureStore.open(out / "store").timelines == ["clip.mp4", "story.txt"]
    assert [s["name"] for s in json.loads((out / "summary.json").read_text())["files"]] == ["clip.mp4", "story.txt"]
    assert model.predict_media([setup / "films"], out, shard=(2, 3), progress=False)["files"] == []  # no file left


KILLED_RUN = """
import os, signal, sys
import nforge_jax.extract.run as run
from nforge_jax.inference.model import NForgeModel

real = run.extract_timeline
def extract_timeline(events, *args, **kw):
    if events["timeline"].iloc[0] == "story.txt":  # the first file is in the store: die inside the second
        os.kill(os.getpid(), signal.SIGKILL)
    return real(events, *args, **kw)
run.extract_timeline = extract_timeline
NForgeModel.from_pretrained(sys.argv[1]).predict_media([sys.argv[2]], sys.argv[3], progress=False)
"""


def test_a_killed_run_resumes(setup):
    """SIGKILL in a real process while it extracts the second file: the rerun extracts only that one."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    out = setup / "killed"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")]), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(setup / "ckpt"), str(setup / "films"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert FeatureStore.open(out / "store").timelines == ["clip.mp4"] and not (out / "predictions").exists()
    report = NForgeModel.from_pretrained(setup / "ckpt").predict_media([setup / "films"], out, progress=False)
    assert report["extract"] == {"written": ["story.txt"], "skipped": ["clip.mp4"]}
    assert sorted(report["predict"]["written"]) == ["clip.mp4", "story.txt"] and len(report["files"]) == 2


def bad_inputs(root, tiny_models):
    """(name, media paths, checkpoint, text the one-line error must hold)."""
    films = root / "films"
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    missing_model = root / "ckpt_missing_model"
    if not missing_model.exists():
        save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), missing_model,
                     metadata={"extract_recipe": recipe(tiny_models, text_model=root / "no_llama").to_dict()})
    (bad / "garbage.mp4").write_bytes(b"\x00not a movie" * 100)
    (bad / "words.wav").write_text("this is text, not sound\n")
    (bad / "empty.txt").write_text("  \n")
    write_streamless_mp4(bad / "nostream.mp4")
    ckpt = root / "ckpt"
    return [("checkpoint", [films], root / "no_ckpt", "no_ckpt: no such file or directory"),
            ("extractor model", [films], missing_model, "no_llama"),
            ("unreadable", [films / "clip.mp4", bad / "garbage.mp4"], ckpt, "garbage.mp4: no video or audio stream"),
            ("no stream", [bad / "nostream.mp4"], ckpt, "nostream.mp4: no video or audio stream it can use"),
            ("wav not audio", [bad / "words.wav"], ckpt, "words.wav: cannot decode audio"),
            ("empty text", [films / "story.txt", bad / "empty.txt"], ckpt, "empty.txt: the text file has no words"),
            ("missing file", [root / "nothing.mp4"], ckpt, "nothing.mp4: no such file or directory"),
            ("not media", [films / "notes.md"], ckpt, "notes.md: not a media file"),
            ("folder without media", [root / "bad" / "sub"], ckpt, "no media file in the folder")]


def test_bad_inputs_are_refused_in_one_line_before_anything_is_written(setup, tiny_models, capsys):
    (setup / "bad" / "sub").mkdir(parents=True, exist_ok=True)
    for what, paths, ckpt, expected in bad_inputs(setup, tiny_models):
        out = setup / f"refused_{what.replace(' ', '_')}"
        code, _, err = run(["--media", *map(str, paths), "--checkpoint", str(ckpt), "--out", str(out)], capsys)
        assert code == 2, what
        first = err.strip().splitlines()[0]
        assert first.startswith("nforge predict: error: ") and expected in first, (what, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 2, (what, err)
        assert not out.exists(), what


def test_media_options_and_defaults(setup, capsys):
    from nforge_jax.inference.stimulus import DEFAULT_ASR_MODEL, DEFAULT_WORDS_PER_SECOND
    from nforge_jax.media import _recipe

    model = NForgeModel.from_pretrained(setup / "ckpt")
    config = _recipe(model, False, "cpu", "bfloat16", {"video": 2, "audio": None})
    assert (config.device, config.dtype, config.video.batch_size) == ("cpu", "bfloat16", 2)
    assert config.audio == model.extract_config.audio and config.text == model.extract_config.text
    with pytest.raises(ValueError, match="batch size of 'text'"):
        _recipe(model, False, batch_sizes={"text": 2})
    code, _, err = run(["--store", str(setup / "s"), "--checkpoint", str(setup / "ckpt"), "--out", str(setup / "x"),
                        "--video-batch-size", "2"], capsys)
    assert code == 2 and "--video-batch-size: only with --media" in err and not (setup / "x").exists()
    # a device that is no device, or one this machine lacks: one line, no features or predictions written
    for device, expected in (("gpu", "ExtractConfig.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
                             ("cuda", "device 'cuda': this torch sees no CUDA GPU")):
        code, _, err = run(["--media", str(setup / "films"), "--checkpoint", str(setup / "ckpt"), "--out",
                            str(setup / "x"), "--device", device], capsys)
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not (setup / "x" / "store").exists() and not (setup / "x" / "predictions").exists()

    args = build_parser().parse_args(["predict", "--media", "a.mp4", "--checkpoint", "c", "--out", "o"])
    assert args.words_per_second == DEFAULT_WORDS_PER_SECOND and args.asr_model == DEFAULT_ASR_MODEL
    for extra, expected in ((["--store", "s"], "--store: not with --media"), ([], "--store or --media is required")):
        media = [] if not extra else ["--media", str(setup / "films")]
        code, _, err = run([*media, *extra, "--checkpoint", str(setup / "ckpt"), "--out", str(setup / "x")], capsys)
        assert code == 2 and expected in err and not (setup / "x").exists()


def test_an_mp4_with_sound_only_is_an_audio_stimulus(tmp_path):
    import av

    from nforge_jax.media import build_events, collect_inputs

    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        stream.layout = "mono"
        x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(32000) / 16000)).astype(np.float32)
        for k in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[None, k:k + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    (item,) = collect_inputs([tmp_path])
    events = build_events(item, words_per_second=2.5, asr=False, asr_model="none")
    assert list(events["type"]) == ["Audio"] and events["filepath"].iloc[0] == str(path)
    assert abs(events["duration"].iloc[0] - 2.0) < 0.1 and events["timeline"].iloc[0] == "voice.mp4"
