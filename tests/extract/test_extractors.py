"""Text / audio / video extractors on tiny random models: shapes, layer choice and 2 Hz timing."""

import numpy as np
import pytest
import torch

from extract_helpers import WORDS
from nforge_jax.data.events import make_events
from nforge_jax.extract.audio import AudioConfig, AudioExtractor
from nforge_jax.extract.decode import read_video_frames
from nforge_jax.extract.text import TextConfig, TextExtractor
from nforge_jax.extract.video import VideoConfig, VideoExtractor, VideoPreprocessor
from nforge_jax.inference.stimulus import add_context
from reference_extractors import audio_extractor, ns_events, segments_features, text_extractor

# --- text -------------------------------------------------------------------------------------------

WORD_TIMES = [(0.0, 0.4), (0.3, 0.2), (1.26, 1.1), (2.5, 0.3), (2.74, 0.5), (4.0, 0.2)]


def word_events(words, times, timeline="story"):
    return make_events([{"type": "Word", "start": s, "duration": d, "text": w, "timeline": timeline}
                        for w, (s, d) in zip(words, times)])


def reference_word_vectors(model_dir, events, cache, layers, **kw):
    """TRIBE v2's own per-word vectors (neuralset's HuggingFaceText), one hidden state per fraction."""
    from neuralset.events.utils import extract_events

    ex = text_extractor(model_dir, cache, layers=list(layers), layer_aggregation=None, cache_n_layers=None, **kw)
    return np.stack(list(ex._get_data(extract_events(ns_events(events), types="Word"))))


def test_text_features_layers_and_timing(release_models, tmp_path):
    words = WORDS[:6]
    events = add_context(word_events(words, WORD_TIMES))
    ex = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(0.0, 0.5, 1.0), batch_size=4))
    grid = ex.extract(events, n_steps=10)
    assert grid.shape == (10, 3, 16)
    # 29 hidden states: fractions 0, 0.5, 1 -> indices 0, 14, 28
    v = reference_word_vectors(release_models["text"], events, tmp_path, (0.0, 0.5, 1.0))
    # rows: w0 -> 0; w1 start 0.3 -> round(0.6) = 1; w2 1.26 s, 1.1 s -> rows 3, 4 (round(2.52) = 3, n = 2);
    # w3 2.5 s -> round(5.0) = 5; w4 2.74 s -> round(5.48) = 5, n = 1; w5 4.0 s -> 8
    expected = np.zeros((10, 3, 16), np.float32)
    for w, rows in enumerate([[0], [1], [3, 4], [5], [5], [8]]):
        expected[rows] += v[w]
    np.testing.assert_allclose(grid, expected, rtol=1e-5, atol=1e-6)
    assert ex.meta()["layer_indices"] == [0, 14, 28] and ex.meta()["n_hidden_states"] == 29


def test_text_batching_with_pad_eos_changes_nothing(release_models):
    # pad = eos, right padding: the pads are cut before the span, so batch neighbours do not matter
    events = add_context(word_events(WORDS[:7], [(0.5 * i, 0.4) for i in range(7)]), max_context_len=2)
    one = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(0.5, 0.75, 1.0),
                                   aggregation="group_mean", cache_n_layers=20, batch_size=1))
    many = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(0.5, 0.75, 1.0),
                                    aggregation="group_mean", cache_n_layers=20, batch_size=5))
    np.testing.assert_allclose(one.extract(events, 7), many.extract(events, 7), rtol=1e-5, atol=1e-6)


def test_text_uses_the_context_column(release_models, tmp_path):
    events = word_events(["mat"], [(0.0, 0.5)])
    events["context"] = ["the cat sat on a warm mat"]
    ex = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(1.0,)))
    got = ex.extract(events, 1)[0]
    expected = reference_word_vectors(release_models["text"], events, tmp_path, (1.0,))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_text_needs_eos_or_pad(tmp_path, tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["text"])
    tok.pad_token = None
    d = tmp_path / "nopad"
    import shutil

    shutil.copytree(tiny_models["text"], d)
    tok.save_pretrained(d)
    with pytest.raises(ValueError, match="eos"):
        TextExtractor(TextConfig(model_id=str(d))).extract(word_events(["cat"], [(0.0, 0.5)]), 1)


# --- audio ------------------------------------------------------------------------------------------

def test_audio_features_resized_to_2hz(tiny_models, media, tmp_path):
    events = make_events([{"type": "Audio", "start": 1.0, "duration": 5.3, "filepath": str(media["wav"]),
                           "timeline": "t", "offset": 0.0, "frequency": 22050.0}])
    ex = AudioExtractor(AudioConfig(model_id=str(tiny_models["audio"])))
    grid = ex.extract(events, n_steps=13)
    assert grid.shape == (13, 2, 32)
    # 4 hidden states, fractions 0.75, 1 -> indices 2, 3; round(5.3 * 2) = 11 rows from round(2 * 1.0) = 2
    ref = segments_features(audio_extractor(tiny_models["audio"], tmp_path, layers=[0.75, 1.0],
                                            layer_aggregation=None, cache_n_layers=None), events)
    np.testing.assert_array_equal(grid[:2], 0)
    assert np.abs(ref[11:]).max() == 0
    np.testing.assert_allclose(grid[2:13], ref[:11], rtol=1e-5, atol=1e-5)


def test_audio_offset_into_the_file(tiny_models, media, tmp_path):
    events = make_events([{"type": "Audio", "start": 0.0, "duration": 2.0, "offset": 1.5,
                           "filepath": str(media["wav"]), "timeline": "t", "frequency": 22050.0}])
    ex = AudioExtractor(AudioConfig(model_id=str(tiny_models["audio"]), layers=(1.0,)))
    grid = ex.extract(events, n_steps=4)
    ref = segments_features(audio_extractor(tiny_models["audio"], tmp_path, layers=[1.0], layer_aggregation=None,
                                            cache_n_layers=None), events)
    np.testing.assert_allclose(grid, ref[:4], rtol=1e-5, atol=1e-5)
    assert np.abs(ref[4:]).max() == 0


def test_audio_chunks_batched_give_the_same_features(tiny_models, media):
    # 5.3 s in 1 s chunks (the last 1.3 s): the four 1 s chunks go through the model together with batch 3 / 8
    events = make_events([{"type": "Audio", "start": 0.0, "duration": 5.3, "filepath": str(media["wav"]),
                           "timeline": "t", "offset": 0.0, "frequency": 22050.0}])
    grids, calls = {}, {}
    for bs in (1, 3, 8):
        ex = AudioExtractor(AudioConfig(model_id=str(tiny_models["audio"]), chunk_s=1.0, min_chunk_s=0.5,
                                        batch_size=bs))
        ex.load()
        sizes = []
        forward = ex.embed_features
        ex.embed_features = lambda f, n, forward=forward, sizes=sizes: sizes.append(f.shape[0]) or forward(f, n)
        done = []
        grids[bs] = ex.extract(events, n_steps=11, progress=done.append)
        calls[bs] = sizes
        assert sum(done) == 5
    assert calls == {1: [1, 1, 1, 1, 1], 3: [3, 1, 1], 8: [4, 1]}
    for bs in (3, 8):
        np.testing.assert_allclose(grids[bs], grids[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        AudioConfig(batch_size=0)


# --- video ------------------------------------------------------------------------------------------

def test_preprocessor_hand_computed_identity_resize_and_crop():
    # crop 4 -> shortest edge int(4 * 256 / 224) = 4: a 4 x 6 frame is not resized; crop left = int(2 / 2) = 1
    p = VideoPreprocessor(crop_size=4)
    assert p.shortest_edge == 4 and p.resize_shape(4, 6) == (4, 6)
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:, 1, 0] = 255   # red column 1 -> first column after the crop
    frame[:, :, 2] = 51    # blue 51 / 255 = 0.2 everywhere
    out = p(frame)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0], (1.0 - 0.485) / 0.229, rtol=1e-6)   # 2.2489083
    np.testing.assert_allclose(out[0, :, 1:], (0.0 - 0.485) / 0.229, rtol=1e-6)  # -2.1179039
    np.testing.assert_allclose(out[1], (0.0 - 0.456) / 0.224, rtol=1e-6)         # -2.0357143
    np.testing.assert_allclose(out[2], (0.2 - 0.406) / 0.225, rtol=1e-5)         # -0.9155556


def test_preprocessor_hand_computed_bilinear_upsampling():
    # crop 7 -> shortest edge int(7 * 256 / 224) = 8: 4 x 4 -> 8 x 8 (x2). Half-pixel bilinear of the row
    # [0, 40, 80, 120] at source x = (i + 0.5) / 2 - 0.5 (clamped): 0, 10, 30, 50, 70, 90, 110, 120;
    # crop 7 at top = left = int(1 / 2) = 0.
    p = VideoPreprocessor(crop_size=7, image_mean=(0, 0, 0), image_std=(1, 1, 1))
    frame = np.tile(np.array([0, 40, 80, 120], np.uint8)[None, :, None], (4, 1, 3))
    out = p(frame)
    assert out.shape == (3, 7, 7)
    np.testing.assert_allclose(out[1] * 255, np.tile([0, 10, 30, 50, 70, 90, 110], (7, 1)), atol=1e-4)
    # a downscaled constant frame stays constant; 40 x 48 -> short edge 36, long int(36 * 48 / 40) = 43
    p = VideoPreprocessor(crop_size=32)
    assert p.resize_shape(40, 48) == (36, 43) and p.resize_shape(48, 40) == (43, 36)
    out = p(np.full((40, 48, 3), 100, np.uint8))
    np.testing.assert_allclose(out[0], (100 / 255 - 0.485) / 0.229, rtol=1e-5)


def test_preprocessor_reads_the_processor_json(tmp_path):
    (tmp_path / "video_preprocessor_config.json").write_text(
        '{"crop_size": {"height": 64, "width": 64}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    p = VideoPreprocessor.from_pretrained(tmp_path)
    assert (p.crop_size, p.shortest_edge, p.image_mean, p.image_std) == (64, 73, (0.5,) * 3, (0.25,) * 3)


def test_video_clips_at_bin_right_edges(tiny_models, media):
    import av
    from transformers import AutoModel

    events = make_events([{"type": "Video", "start": 0.5, "duration": 2.5, "filepath": str(media["mp4"]),
                           "timeline": "t"}])
    ex = VideoExtractor(VideoConfig(model_id=str(tiny_models["video"]), layers=(0.75, 1.0), batch_size=3))
    grid = ex.extract(events, n_steps=7)
    assert grid.shape == (7, 2, 32)
    # independent: all frames decoded; n = round(2 * 2.5) = 5 points t_k = 0.5 .. 2.5; clip of 4 frames at
    # t_k - j * 1 s (j = 3..0, clamped at 0); frame shown at t = floor(8 t) at 8 fps; rows 1 .. 5
    with av.open(str(media["mp4"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    pre = VideoPreprocessor.from_pretrained(tiny_models["video"])
    model = AutoModel.from_pretrained(tiny_models["video"]).eval()
    expected = np.zeros((7, 2, 32), np.float32)
    for k, t in enumerate(np.linspace(0, 2.5, 6)[1:]):
        times = np.maximum(t - np.array([3, 2, 1, 0]) * 1.0, 0)
        clip = np.stack([pre(frames[min(int(np.floor(s * 8 + 1e-9)), len(frames) - 1)]) for s in times])
        with torch.no_grad():
            hs = model(pixel_values_videos=torch.from_numpy(clip[None]), output_hidden_states=True).hidden_states
        expected[1 + k] = np.stack([hs[i][0].mean(0).numpy() for i in (2, 3)])
    np.testing.assert_allclose(grid, expected, rtol=1e-4, atol=1e-4)
    assert ex.meta()["frames_per_clip"] == 4


def test_video_time_past_the_end_gets_the_previous_times_frame(tiny_models, media):
    # the 5 s mp4 at 8 fps (frame i grey 6 i); last clip of a whole-file chunk: t = 2, 3, 4, 5 s -> frames
    # 16, 24, 32 and, at 5 s (no frame 40), the frame moviepy read last: 32, not the file's last (39)
    ex = VideoExtractor(VideoConfig(model_id=str(tiny_models["video"])))
    ex.load()
    times = np.array([[2.0, 3.0, 4.0, 5.0], [4.99, 5.0, 5.5, 6.0]])
    clips = ex.read_clips(media["mp4"], times)
    _, past_end = read_video_frames(media["mp4"], times.reshape(-1), past_end=True)
    assert past_end.tolist() == [False, False, False, True, False, True, True, True]
    grey = np.round((clips[:, :, 0, 0, 0] * 0.229 + 0.485) * 255)  # back to the red value of the frame
    np.testing.assert_allclose(grey, 6 * np.array([[16, 24, 32, 32], [39, 39, 39, 39]]), atol=3)
    # a block starting past the end takes the frame given before it (the previous block's last)
    before = clips[0, 2]
    np.testing.assert_array_equal(ex.read_clips(media["mp4"], np.array([[5.0, 5.5]]), before)[0, 0], before)


def test_video_token_aggregation(tiny_models):
    from transformers import AutoModel

    clip = np.random.default_rng(0).standard_normal((1, 4, 3, 32, 32)).astype(np.float32)
    model = AutoModel.from_pretrained(tiny_models["video"]).eval()
    with torch.no_grad():
        hs = model(pixel_values_videos=torch.from_numpy(clip), output_hidden_states=True).hidden_states
    last = hs[3][0].numpy()  # (tokens, D); layers (1.0,) with cat -> the last of 4 states
    expected = {"mean": last.mean(0), "sum": last.sum(0), "max": last.max(0), "first": last[0], "last": last[-1]}
    for how, vec in expected.items():
        ex = VideoExtractor(VideoConfig(model_id=str(tiny_models["video"]), layers=(1.0,), token_aggregation=how))
        np.testing.assert_allclose(ex.embed_clips(clip)[0, 0], vec, rtol=1e-5, atol=1e-5, err_msg=how)


def test_no_matching_events_gives_none(tiny_models):
    events = word_events(["cat"], [(0.0, 0.5)])
    assert AudioExtractor(AudioConfig(model_id=str(tiny_models["audio"]))).extract(events, 2) is None
    assert VideoExtractor(VideoConfig(model_id=str(tiny_models["video"]))).extract(events, 2) is None


def test_video_default_batch_fills_the_device_and_changes_no_feature(tiny_models, media):
    """batch_size None: as many clips per forward as the memory budget holds (capped); the features are those
    of one clip per forward."""
    from types import SimpleNamespace

    from nforge_jax.extract.video import MAX_AUTO_CLIPS, auto_clip_batch

    events = make_events([{"type": "Video", "start": 0.0, "duration": 3.0, "filepath": str(media["mp4"]),
                           "timeline": "t"}])
    auto = VideoExtractor(VideoConfig(model_id=str(tiny_models["video"]), layers=(0.75, 1.0)), device="cpu")
    one = VideoExtractor(VideoConfig(model_id=str(tiny_models["video"]), layers=(0.75, 1.0), batch_size=1), device="cpu")
    got = auto.extract(events, n_steps=6)
    assert auto.clip_batch == MAX_AUTO_CLIPS  # a tiny model on the CPU budget: the cap
    np.testing.assert_allclose(got, one.extract(events, n_steps=6), rtol=1e-5, atol=1e-6)
    # the released V-JEPA 2 (40 layers, width 1408, 64 frames of 256 px in 16 px patches) in bfloat16
    released = SimpleNamespace(crop_size=256, patch_size=16, tubelet_size=2, num_hidden_layers=40, hidden_size=1408)
    per_clip = 2 * 41 * (32 * 16 * 16) * 1408 * 2 + 2 * 64 * 3 * 256 * 256 * 4
    assert auto_clip_batch(released, 64, 2, 39 * 10**9) == 39 * 10**9 // per_clip == 19
    assert auto_clip_batch(released, 64, 2, 10**6) == 1 and auto_clip_batch(released, 64, 2, 10**15) == MAX_AUTO_CLIPS
    with pytest.raises(ValueError, match="video batch_size"):
        VideoConfig(batch_size=0)
