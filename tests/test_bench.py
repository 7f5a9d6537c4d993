"""tools/bench.py measures what it says: each benchmark runs at a small size, compares like with like (same
weights and dtype on both sides, so the outputs agree), and reports the fields BUILD.md quotes."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", TOOLS / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


def test_forward_compares_the_same_function(bench):
    out = bench.bench_forward("small", batch=1, repeats=1)
    assert out["rel_err"] < 1e-5  # the baseline ran the same weights on the same input
    assert out["jax"]["median_s"] > 0 and out["torch_eager"]["median_s"] > 0
    assert out["jax_memory"]["xla_total_bytes"] > out["jax_memory"]["xla_temp_bytes"] > 0


def test_bfloat16_forward_stays_close_to_the_baseline(bench):
    out = bench.bench_forward("small", batch=1, repeats=1, dtype="bfloat16")
    assert out["config"]["dtype"] == "bfloat16"
    assert 1e-5 < out["rel_err"] < 0.1  # really computed in bfloat16, and still the same model


def test_train_reports_flops_memory_and_no_mfu_without_a_known_peak(bench):
    out = bench.bench_train("small", batch=2, repeats=1)
    assert out["mfu"] is None  # CPU: no peak in the table
    assert out["tflops_per_s"] > 0 and out["config"]["flops_per_step"] > 0
    assert out["jax_memory"]["xla_total_bytes"] > 0


def test_ridge_agrees_with_himalaya(bench):
    out = bench.bench_ridge("small", n_samples=300, n_vertices=200)
    assert out["max_cv_score_diff"] < 1e-3
    assert out["same_alpha_fraction"] > 0.95


def test_text_extraction_compares_the_same_features(bench):
    out = bench.bench_extract_text(n_words=40, context_words=8)
    assert out["neuralset"]["rel_err_release_rule"] < 1e-5  # the baseline computed the release's features
    assert out["release_rule"]["words_from_one_pass"] == 9  # words 0..8 see all the text before them
    assert out["shared"]["first_words_max_rel"] < 1e-5  # the same words, by the shared pass
    assert set(out["shared"]["later_words"]) == {"group0", "group1"}  # later: a longer context, measured
    assert out["shared"]["tokens_ratio"] > 2 and out["release_rule"]["tokens_per_word"] > 8
    assert out["release_rule"]["speedup_vs_neuralset"] > 0 and out["neuralset"]["s"] > 0


def test_video_and_audio_extraction_compare_the_same_features(bench):
    import bench_extract

    v = bench_extract.bench_extract_video(seconds=3.0, batch_size=3)
    assert v["max_rel"] < 1e-5  # neuralset computed the release's features from the same film
    # each frame decoded once (25 fps, a clip every 0.5 s) instead of 64 reads per clip
    assert 10 <= v["frames_decoded_per_clip"] <= 14 and v["frames_preprocessed_per_clip"] < 12
    assert v["ours_s"] > 0 and v["neuralset_s"] > 0
    a = bench_extract.bench_extract_audio(seconds=8.0, batch_size=2)
    assert a["max_rel"] < 1e-5 and a["speedup"] > 0


def test_end_to_end_and_dtype_compare_like_with_like(bench):
    import bench_extract

    e = bench_extract.bench_extract_e2e(seconds=6.0)
    assert max(e["features_max_rel"].values()) < 1e-5 and e["predictions_max_rel"] < 1e-4
    assert e["config"]["words"] == 11 and e["reference_s"] > 0
    d = bench_extract.bench_extract_dtype(seconds=4.0)
    # really computed in bfloat16 (differs), and still the same features (close)
    assert 1e-4 < max(d["features_max_rel"].values()) < 1.0 and 1e-4 < d["predictions_max_rel"] < 0.2
