"""predict_store: equal to predict_features per timeline, sharded over 8 devices, resumable after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from nforge_jax.data.store import FeatureStore
from nforge_jax.cli import main as nforge
from nforge_jax.data.shards import parse_shard
from nforge_jax.inference.batch import finished_timelines, predict_store, read_predictions
from nforge_jax.inference.model import NForgeModel
from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.checkpoint import save_encoder

ROOT = Path(__file__).resolve().parents[2]
CONFIG = EncoderConfig(feature_dims=(("text", 2, 16), ("audio", 1, 8)), n_outputs=30, n_output_timesteps=10,
                       hidden=64, depth=1, heads=2, low_rank_head=16, n_subjects=2)
# (name, {modality: T}, start_s)
TIMELINES = [("a", {"text": 53, "audio": 53}, 0.0), ("b", {"text": 7}, 0.0), ("c", {"audio": 41}, 0.0),
             ("d", {"text": 60, "audio": 58}, 0.0), ("e", {"text": 45, "audio": 45}, 3.0),
             ("f", {"text": 20, "audio": 20}, 0.0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), root / "ckpt")
    store = FeatureStore.create(root / "store")
    rng = np.random.default_rng(0)
    dims = {m: (n, d) for m, n, d in CONFIG.feature_dims}
    for name, lengths, start in TIMELINES:
        feats = {m: rng.standard_normal((t, *dims[m])).astype(np.float32) for m, t in lengths.items()}
        store.write_timeline(name, features=feats, meta={"study": "S", "subject": "x", "start_s": start})
    return root


def expected(model, store, name):
    """predict_features on the stored features from row round(2 * start_s), shorter modalities zero-padded."""
    start = store.meta(name).get("start_s", 0.0)
    r0 = int(round(2 * start))
    arrays = {m: np.asarray(store.features(name, m), np.float32)[r0:] for m in store.modalities(name)}
    t = max(a.shape[0] for a in arrays.values())
    feats = {m: np.concatenate([a, np.zeros((t - a.shape[0], *a.shape[1:]), np.float32)]) for m, a in arrays.items()}
    return model.predict_features(feats)


def test_equals_predict_features_on_8_devices(setup, tmp_path):
    assert len(jax.local_devices()) == 8
    model = NForgeModel.from_pretrained(setup / "ckpt", batch_size=3)  # rounded up to 8 windows per step
    store = FeatureStore.open(setup / "store")
    report = predict_store(model, store, tmp_path / "out", progress=True)
    assert sorted(report["written"]) == [n for n, _, _ in TIMELINES] and report["skipped"] == []
    for name, lengths, start in TIMELINES:
        got = read_predictions(tmp_path / "out", name)
        want = expected(model, store, name)
        # rows: ceil((T - round(2 start)) / 2)
        assert got.shape == (-(-(max(lengths.values()) - int(2 * start)) // 2), 30) == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    rec = finished_timelines(tmp_path / "out")["e"]
    assert rec["start_s"] == 3.0 and rec["tr_s"] == 1.0
    assert predict_store(model, store, tmp_path / "out", progress=False)["skipped"] == sorted(report["written"])


def test_named_subject_and_cli(setup, tmp_path, capsys):
    model = NForgeModel.from_pretrained(setup / "ckpt")
    store = FeatureStore.open(setup / "store")
    predict_store(model, store, tmp_path / "s1", subject=1, timelines=["a"], progress=False)
    feats = {m: np.asarray(store.features("a", m), np.float32) for m in store.modalities("a")}
    np.testing.assert_allclose(read_predictions(tmp_path / "s1", "a"), model.predict_features(feats, subject=1),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="subject"):
        predict_store(model, store, tmp_path / "s1", subject=None, timelines=["b"], progress=False)
    assert nforge(["predict", "--store", str(setup / "store"), "--checkpoint", str(setup / "ckpt"), "--out",
                 str(tmp_path / "cli"), "--no-progress", "--timeline", "b"]) == 0
    assert "1 timelines written" in capsys.readouterr().out


SCRIPT = """
import os, signal, sys
from nforge_jax.inference.batch import predict_store
from nforge_jax.inference.model import NForgeModel
model = NForgeModel.from_pretrained(sys.argv[1], batch_size=2)
done = []
def on_done(name, path):
    done.append(name)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed with one batch in flight and a timeline half done
predict_store(model, sys.argv[2], sys.argv[3], progress=False, on_timeline_done=on_done)
"""


def test_resume_after_sigkill(setup, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(setup / "ckpt"), str(setup / "store"),
                           str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    first = finished_timelines(out)
    assert len(first) == 2
    stamps = {n: (out / r["file"]).stat().st_mtime_ns for n, r in first.items()}
    model = NForgeModel.from_pretrained(setup / "ckpt", batch_size=2)
    seen = []
    report = predict_store(model, setup / "store", out, progress=False, on_timeline_done=lambda n, p: seen.append(n))
    assert sorted(report["skipped"]) == sorted(first) and sorted(seen) == sorted(set(n for n, _, _ in TIMELINES) - set(first))
    assert {n: (out / r["file"]).stat().st_mtime_ns for n, r in finished_timelines(out).items() if n in first} == stamps
    assert not list(out.glob(".*tmp*"))
    store = FeatureStore.open(setup / "store")
    for name, _, _ in TIMELINES:
        np.testing.assert_allclose(read_predictions(out, name), expected(model, store, name), rtol=1e-5, atol=1e-5)
    json.loads((out / "nforge_predictions.json").read_text())


def test_two_processes_share_the_timelines(setup, tmp_path):
    """`nforge predict` in 2 independent processes, one told its shard by --shard, one by SLURM's variables:
    each writes its own timelines, together all of them, equal to one process's predictions."""
    out = tmp_path / "out"
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    base.pop("SLURM_NTASKS", None)
    cmd = [sys.executable, "-m", "nforge_jax.cli", "predict", "--store", str(setup / "store"), "--checkpoint",
           str(setup / "ckpt"), "--out", str(out), "--batch-size", "2", "--no-progress"]
    procs = [subprocess.Popen(cmd + ["--shard", "0/2"], env=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True),
             subprocess.Popen(cmd, env={**base, "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(f"--- process {i} ---\n{o[-2000:]}" for i, o in enumerate(outs))
    # Timelines are dealt round-robin: 3 each, none twice.
    assert all("3 timelines written" in o for o in outs), outs
    model = NForgeModel.from_pretrained(setup / "ckpt")
    store = FeatureStore.open(setup / "store")
    assert sorted(finished_timelines(out)) == sorted(n for n, _, _ in TIMELINES)
    for name, _, _ in TIMELINES:
        np.testing.assert_allclose(read_predictions(out, name), expected(model, store, name), rtol=1e-5, atol=1e-5)


def test_shard_argument_errors_name_the_option():
    assert parse_shard(None, {}) is None
    assert parse_shard("2/4", {}) == (2, 4)
    assert parse_shard(None, {"SLURM_NTASKS": "3", "SLURM_PROCID": "2"}) == (2, 3)
    for bad in ("4/4", "a/2", "1", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad, {})
