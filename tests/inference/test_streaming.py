"""StreamingPredictor: equality with offline predict_features, warm-up, step cadence, flush, one compiled shape."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nforge_jax import NForgeModel
from nforge_jax.inference.streaming import StreamingPredictor
from nforge_jax.model import EncoderConfig, FmriEncoder

DIMS = (("text", 2, 16), ("audio", 1, 8))
CONFIG = EncoderConfig(feature_dims=DIMS, n_outputs=30, n_output_timesteps=10, hidden=64, depth=1, heads=2,
                       low_rank_head=16, n_subjects=2)
W = CONFIG.n_output_timesteps


@pytest.fixture(scope="module")
def model():
    return NForgeModel(FmriEncoder(CONFIG, rngs=nnx.Rngs(3)), device="cpu")


def frames(n, seed=0, modalities=("text", "audio")):
    rng = np.random.default_rng(seed)
    return [{m: rng.standard_normal((2, l, d)).astype(np.float32) for m, l, d in DIMS if m in modalities}
            for _ in range(n)]


def stacked(fs):
    """Frames -> the {m: (2 * n, L, D)} dict predict_features takes."""
    return {m: np.concatenate([f[m] for f in fs]) for m in fs[0]}


def test_matches_offline_where_windows_coincide(model):
    fs = frames(25)
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W)
    outs = [stream.push_frame(f) for f in fs]
    assert all(o is None for o in outs[: W - 1])
    whole = model.predict_features(stacked(fs))  # windows [0, 10), [10, 20), [20, 25)+padding
    for k in range(W - 1, 25):
        assert outs[k].shape == (30,)
        window = model.predict_features(stacked(fs[k - W + 1 : k + 1]))
        np.testing.assert_allclose(outs[k], window[-1], rtol=1e-5, atol=1e-5)
    for k in (W - 1, 2 * W - 1):
        np.testing.assert_allclose(outs[k], whole[k], rtol=1e-5, atol=1e-5)


def test_named_subject_and_missing_modality(model):
    fs = frames(12, seed=1, modalities=("text",))  # audio never given = absent, as in predict_features
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W, subject=1)
    outs = [stream.push_frame(f) for f in fs]
    for k in (W - 1, 11):
        expected = model.predict_features(stacked(fs[k - W + 1 : k + 1]), subject=1)[-1]
        np.testing.assert_allclose(outs[k], expected, rtol=1e-5, atol=1e-5)
    average = model.predict_features(stacked(fs[2:12]))[-1]
    assert not np.allclose(outs[11], average, atol=1e-3)


def test_one_vector_per_tr_is_used_for_both_steps(model):
    rng = np.random.default_rng(2)
    vecs = [{"text": rng.standard_normal((2, 16)).astype(np.float32)} for _ in range(W)]
    a = StreamingPredictor.from_nforge_model(model, window_trs=W)
    b = StreamingPredictor.from_nforge_model(model, window_trs=W)
    out_a = [a.push_frame(v) for v in vecs][-1]
    out_b = [b.push_frame({"text": np.stack([v["text"], v["text"]])}) for v in vecs][-1]
    np.testing.assert_array_equal(out_a, out_b)


def test_step_cadence_flush_and_reset(model):
    fs = frames(17, seed=3)
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W, step_trs=3)
    outs = [stream.push_frame(f) for f in fs]
    emitted = [k for k, o in enumerate(outs) if o is not None]
    assert emitted == [9, 12, 15]
    owed = stream.flush()  # frame 16 was not emitted
    assert owed.shape == (1, 30)
    np.testing.assert_allclose(owed[0], model.predict_features(stacked(fs[7:17]))[-1], rtol=1e-5, atol=1e-5)
    assert stream.n_frames == 0 and not stream.is_warm
    assert stream.flush().shape == (0, 30)  # nothing owed after a flush
    # After the reset the stream warms up again from scratch.
    outs2 = [stream.push_frame(f) for f in fs[:W]]
    assert all(o is None for o in outs2[:-1])
    np.testing.assert_allclose(outs2[-1], model.predict_features(stacked(fs[:W]))[-1], rtol=1e-5, atol=1e-5)
    assert stream.flush().shape == (0, 30)  # the newest frame was already returned


def test_flush_of_a_short_stream_equals_offline(model):
    fs = frames(4, seed=4, modalities=("audio",))
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W)
    # A previous, longer stream must leave nothing behind.
    for f in frames(13, seed=5):
        stream.push_frame(f)
    stream.reset()
    assert all(stream.push_frame(f) is None for f in fs)
    owed = stream.flush()
    expected = model.predict_features(stacked(fs))
    assert owed.shape == expected.shape == (4, 30)
    np.testing.assert_allclose(owed, expected, rtol=1e-5, atol=1e-5)


def test_one_compiled_shape(model):
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W, step_trs=2)
    for f in frames(15, seed=6):
        stream.push_frame(f)
    counts = dict(stream.trace_counts)
    assert counts == {"write": 1, "hidden": 1, "readout": 1}
    for i, f in enumerate(frames(14, seed=7)):
        stream.push_frame({"text": f["text"]} if i % 3 else f)  # modality presence changes too
    stream.flush()
    for f in frames(3, seed=8):
        stream.push_frame(f)
    stream.flush()  # short-stream flush: several read-out rows, same shapes
    assert stream.trace_counts == counts
    assert stream._hidden._cache_size() == 1 and stream._readout._cache_size() == 1


def test_other_window_length_runs_the_model_unpooled(model):
    window = 6
    fs = frames(8, seed=9)
    stream = StreamingPredictor.from_nforge_model(model, window_trs=window)
    out = [stream.push_frame(f) for f in fs][-1]
    encoder = model.encoder
    feats = {m: jnp.asarray(v)[None] for m, v in stacked(fs[-window:]).items()}
    unpooled = np.asarray(encoder(feats, pool=False))[0]  # (2 * window, V)
    np.testing.assert_allclose(out, unpooled[-2:].mean(0), rtol=1e-5, atol=1e-5)


def test_mid_stream_absence_is_zero_projection(model):
    # Audio absent for one TR inside the window = that TR's audio projection is zero. With the audio
    # projector's bias set to zero, zero audio features give the same projection, so the offline call on
    # zero-filled audio is an independent expectation.
    encoder = FmriEncoder(CONFIG, rngs=nnx.Rngs(3))  # the fixture's weights, a separate copy
    encoder.projectors["audio"].layers[0].bias[...] = jnp.zeros_like(encoder.projectors["audio"].layers[0].bias[...])
    no_bias = NForgeModel(encoder, device="cpu")
    fs = frames(W, seed=10)
    fs[4] = {"text": fs[4]["text"]}
    stream = StreamingPredictor.from_nforge_model(no_bias, window_trs=W)
    out = [stream.push_frame(f) for f in fs][-1]
    filled = [dict(f, audio=f.get("audio", np.zeros((2, 1, 8), np.float32))) for f in fs]
    np.testing.assert_allclose(out, no_bias.predict_features(stacked(filled))[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw,needle", [
    (dict(window_trs=0), "window_trs"), (dict(step_trs=0), "step_trs"), (dict(subject=2), "subject"),
    (dict(window_trs=600), "max_seq_len"), (dict(tr_seconds=-1), "tr_seconds"),
])
def test_bad_arguments_are_named(model, kw, needle):
    with pytest.raises(ValueError, match=needle):
        StreamingPredictor.from_nforge_model(model, **kw)


@pytest.mark.parametrize("frame,needle", [
    ({"text": np.zeros((3, 2, 16))}, r"features\['text'\]: expected one TR"),
    ({"smell": np.zeros((2, 16))}, "unknown modality 'smell'"),
    ({}, "none of the model's modalities"),
])
def test_bad_frames_are_named(model, frame, needle):
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W)
    with pytest.raises(ValueError, match=needle):
        stream.push_frame(frame)
