"""Bad input to the prediction entry points is refused in one line, the same way on every path; a rerun into
a directory made by another model, subject or store inputs is refused instead of reporting "already done"."""

import json

import numpy as np
import pandas as pd
import pytest
from flax import nnx

from nforge_jax.cli import main as cli_main
from nforge_jax.data.spaces import OutputSpace, SpaceMismatch
from nforge_jax.data.store import FeatureStore
from nforge_jax.inference.adapt import run_adapt
from nforge_jax.inference.batch import MARKER, PredictionsMismatch, predict_store, read_predictions
from nforge_jax.inference.segments import predict_events
from nforge_jax.inference.model import NForgeModel
from nforge_jax.inference.streaming import StreamingPredictor
from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.checkpoint import CheckpointError, save_encoder

CONFIG = EncoderConfig(feature_dims=(("text", 2, 16), ("audio", 1, 8)), n_outputs=30, n_output_timesteps=10,
                       hidden=64, depth=1, heads=2, low_rank_head=16, n_subjects=2)
DIMS = {m: (n, d) for m, n, d in CONFIG.feature_dims}
NAMES = ["sub-01", "sub-02"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    for seed in (0, 1):
        save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(seed)), root / f"ckpt{seed}", metadata={"subjects": NAMES})
    return root


@pytest.fixture(scope="module")
def model(ckpts):
    return NForgeModel.from_pretrained(ckpts / "ckpt0", batch_size=4)


def feats(t, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((t, *d)).astype(np.float32) for m, d in DIMS.items()}


def make_store(path, lengths=(2, 2, 22), start_s=0.0):
    store = FeatureStore.create(path)
    for i, t in enumerate(lengths):
        store.write_timeline("abc"[i], features=feats(t, i), meta={"study": "S", "subject": "x", "start_s": start_s})
    return store


def cli(*argv):
    return cli_main(["predict", *map(str, argv), "--no-progress"])


# 1. one subject resolver ------------------------------------------------------------------------------------
def test_subject_out_of_range_is_refused_on_every_path(model, ckpts, tmp_path, capsys):
    store = make_store(tmp_path / "store")
    f = feats(20)
    for bad in (2, 5, -1, "7", "sub-03", True):
        with pytest.raises(ValueError, match="subject"):
            model.predict_features(f, subject=bad)
        with pytest.raises(ValueError, match="subject"):
            predict_store(model, store, tmp_path / "out", subject=bad, progress=False)
        assert not (tmp_path / "out" / MARKER).exists()  # a refused run leaves no marker behind
    assert cli("--store", tmp_path / "store", "--checkpoint", ckpts / "ckpt0", "--out", tmp_path / "out",
               "--subject", 2) == 2
    err = capsys.readouterr().err
    assert "subject" in err and "[0, 2)" in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err
    assert not (tmp_path / "out" / MARKER).exists()
    # the corrected rerun is not blocked
    assert cli("--store", tmp_path / "store", "--checkpoint", ckpts / "ckpt0", "--out", tmp_path / "out",
               "--subject", "sub-02") == 0


def test_subject_names_work_everywhere(model, tmp_path):
    f = feats(20)
    want = model.predict_features(f, subject=1)
    np.testing.assert_array_equal(model.predict_features(f, subject="sub-02"), want)
    np.testing.assert_array_equal(model.predict_features(f, subject="1"), want)
    store = make_store(tmp_path / "store", lengths=(20,))
    predict_store(model, store, tmp_path / "out", subject="sub-02", progress=False)
    stored = {m: np.asarray(store.features("a", m), np.float32) for m in DIMS}  # float16 in the store
    np.testing.assert_allclose(read_predictions(tmp_path / "out", "a"), model.predict_features(stored, subject=1),
                               rtol=1e-5, atol=1e-5)
    events = pd.DataFrame([{"type": "Word", "start": 0.0, "duration": 10.0, "timeline": "t", "text": "x"}])
    preds, _ = predict_events(model, events, subject="sub-02", features=f)
    np.testing.assert_allclose(preds, want, rtol=1e-5, atol=1e-5)
    assert StreamingPredictor.from_nforge_model(model, window_trs=10, subject="sub-02")._row == 1


# 2. the output directory records what made it ---------------------------------------------------------------
def test_rerun_with_another_checkpoint_or_subject_is_refused(model, ckpts, tmp_path, capsys):
    store = make_store(tmp_path / "store")
    out = tmp_path / "out"
    predict_store(model, store, out, progress=False)
    marker = json.loads((out / MARKER).read_text())
    assert len(marker["model_sha256"]) == 64 and marker["subject"] == "average"
    other = NForgeModel.from_pretrained(ckpts / "ckpt1")
    with pytest.raises(PredictionsMismatch, match="different checkpoint"):
        predict_store(other, store, out, progress=False)
    with pytest.raises(PredictionsMismatch, match="another subject"):
        predict_store(model, store, out, subject=0, progress=False)
    assert cli("--store", tmp_path / "store", "--checkpoint", ckpts / "ckpt1", "--out", out) == 2
    err = capsys.readouterr().err
    assert MARKER in err and "model_sha256" in err and "--overwrite" in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err
    # a timeline record made by another model is refused even without the marker (e.g. another shard's)
    (out / MARKER).unlink()
    with pytest.raises(PredictionsMismatch, match="different checkpoint"):
        predict_store(other, store, out, progress=False)
    report = predict_store(other, store, out, progress=False, overwrite=True)
    assert sorted(report["written"]) == ["a", "b", "c"]
    stored = {m: np.asarray(store.features("c", m), np.float32) for m in DIMS}
    np.testing.assert_allclose(read_predictions(out, "c"), other.predict_features(stored), rtol=1e-5, atol=1e-5)
    assert predict_store(other, store, out, progress=False)["skipped"] == ["a", "b", "c"]


def test_changed_store_inputs_are_refused(model, tmp_path):
    store = make_store(tmp_path / "store")
    predict_store(model, store, tmp_path / "out", progress=False)
    store.add_features("b", "text", feats(2, 9)["text"])  # re-extracted features
    with pytest.raises(PredictionsMismatch, match=r"timeline|inputs\.features_sha256"):
        predict_store(model, store, tmp_path / "out", progress=False)


def test_corrupt_marker_is_named(model, tmp_path):
    store = make_store(tmp_path / "store")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MARKER).write_text("{not json")
    with pytest.raises(ValueError, match=f"{MARKER}: unreadable or not JSON"):
        predict_store(model, store, tmp_path / "out", progress=False)
    (tmp_path / "out" / MARKER).write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{MARKER}: field 'format'"):
        predict_store(model, store, tmp_path / "out", progress=False)


# 3. negative start times --------------------------------------------------------------------------------------
def test_negative_start_is_refused_on_every_path(model, tmp_path):
    store = make_store(tmp_path / "store", lengths=(60,), start_s=-6.0)
    with pytest.raises(ValueError, match=r"timeline 'a'.*-6 s, before time 0"):
        predict_store(model, store, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / MARKER).exists()
    events = pd.DataFrame([{"type": "Word", "start": s, "duration": 1.0, "timeline": "t", "text": "x"}
                           for s in (-24.0, 0.0, 10.0)])
    with pytest.raises(ValueError, match=r"timeline 't'.*-24 s, before time 0"):
        predict_events(model, events, features=feats(60))


# 4. non-finite features ----------------------------------------------------------------------------------------
def test_non_finite_features_are_refused(model, tmp_path):
    f = feats(30)
    f["audio"][17, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"features\['audio'\]: row 17 holds nan"):
        model.predict_features(f)
    events = pd.DataFrame([{"type": "Word", "start": 0.0, "duration": 15.0, "timeline": "t", "text": "x"}])
    with pytest.raises(ValueError, match=r"timeline 't' features\['audio'\]: row 17"):
        predict_events(model, events, features=f)


def _poison(store, name, modality, row):
    """Writes +inf into one stored row, keeping the manifest checksum consistent (as a foreign writer would)."""
    import hashlib

    manifest = store.manifest(name)
    entry = manifest["arrays"][f"features/{modality}"]
    path = store.path / "timelines" / store._dir(name).name / entry["file"]
    arr = np.load(path, mmap_mode="r+")
    arr[row, 0, 0] = np.inf
    arr.flush()
    entry["sha256"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    del arr
    (store._dir(name) / "manifest.json").write_text(json.dumps(manifest))


def test_store_holding_inf_is_refused_and_verify_reports_it(model, ckpts, tmp_path, capsys):
    store = make_store(tmp_path / "store", lengths=(30,))
    _poison(store, "a", "text", 23)
    with pytest.raises(ValueError, match=r"timeline 'a' features\['text'\]: row 23 holds inf"):
        predict_store(model, FeatureStore.open(tmp_path / "store"), tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("a-*"))
    assert cli("--store", tmp_path / "store", "--checkpoint", ckpts / "ckpt0", "--out", tmp_path / "out2") == 2
    assert "row 23 holds inf" in capsys.readouterr().err
    assert cli_main(["store", "verify", str(tmp_path / "store")]) == 1
    assert "not finite" in capsys.readouterr().out


# 6. batch size ---------------------------------------------------------------------------------------------------
def test_batch_size_must_be_positive(model, ckpts, tmp_path, capsys):
    store = make_store(tmp_path / "store")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            predict_store(model, store, tmp_path / "out", batch_size=bad, progress=False)
        with pytest.raises(ValueError, match="batch_size"):
            model.predict_features(feats(20), batch_size=bad)
        with pytest.raises(SystemExit):
            cli("--store", tmp_path / "store", "--checkpoint", ckpts / "ckpt0", "--out", tmp_path / "out",
                "--batch-size", bad)
        assert "--batch-size: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# 11. progress bar ------------------------------------------------------------------------------------------------
def test_progress_bar_ends_at_its_total(model, tmp_path, capsys):
    # rows 1, 1, 11: summed as floats in hours, 1/3600 + 1/3600 + 11/3600 overshoots 13/3600
    store = make_store(tmp_path / "store", lengths=(2, 2, 22))
    with pytest.warns() as record:
        import warnings
        warnings.warn("sentinel", UserWarning)
        predict_store(model, store, tmp_path / "out", progress=True, batch_size=8)
    assert [str(w.message) for w in record] == ["sentinel"]
    err = capsys.readouterr().err
    assert "<-" not in err and "clamping" not in err, err


# 12. output spaces -----------------------------------------------------------------------------------------------
def fake_subcortical(digest: str, n_outputs: int = CONFIG.n_outputs) -> OutputSpace:
    """A subcortical space with a made-up grid: two of them differ only in their voxels, as FSL's atlas and the
    offline rebuild would at an equal voxel count."""
    grid = {"shape": [4, 4, 4], "affine": np.eye(4).tolist(), "voxels_sha256": digest * 64, "exact": False,
            "source": "test"}
    return OutputSpace("subcortical", n_outputs, grid)


@pytest.fixture(scope="module")
def subcortical_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("spaces") / "subcortical"
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), path,
                 metadata={"subjects": NAMES, "output_space": fake_subcortical("a").to_dict()})
    return path


def store_with_fmri(path, space, n_columns=CONFIG.n_outputs):
    store = FeatureStore.create(path)
    meta = {"study": "S", "subject": "x", **({} if space is None else {"space": space.to_dict()})}
    store.write_timeline("a", features=feats(20), fmri=np.zeros((10, n_columns), np.float32), meta=meta)
    return store


def test_model_output_space_is_recorded_or_inferred(subcortical_ckpt, model):
    assert NForgeModel.from_pretrained(subcortical_ckpt).output_space == fake_subcortical("a")
    assert (model.output_space.name, model.output_space.n_outputs) == ("unspecified", 30)


def test_predict_refuses_a_store_of_another_space(subcortical_ckpt, tmp_path, capsys):
    model = NForgeModel.from_pretrained(subcortical_ckpt, batch_size=4)
    for i, (space, columns) in enumerate([(fake_subcortical("b"), 30), (None, 20)]):
        store = store_with_fmri(tmp_path / f"store{i}", space, columns)
        with pytest.raises(SpaceMismatch, match=f"timeline 'a' of the store .*store{i}.* but the model is subcortical"):
            predict_store(model, store, tmp_path / "out", progress=False)
        assert cli("--store", store.path, "--checkpoint", subcortical_ckpt, "--out", tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err
        assert "the model is subcortical (30 voxels" in err and f"store{i}" in err
        assert not (tmp_path / "out").exists()
    # same space (and a store that names none but has as many columns): predicted, the marker says which
    for i, space in enumerate([fake_subcortical("a"), None]):
        store = store_with_fmri(tmp_path / f"same{i}", space)
        predict_store(model, store, tmp_path / f"out{i}", progress=False)
        marker = json.loads((tmp_path / f"out{i}" / MARKER).read_text())
        assert OutputSpace.from_dict(marker["space"]) == fake_subcortical("a")


def test_adapt_refuses_calibration_of_another_space(subcortical_ckpt, tmp_path, capsys):
    store = FeatureStore.create(tmp_path / "store")
    rng = np.random.default_rng(0)
    for name, space in (("same", fake_subcortical("a")), ("other", fake_subcortical("b"))):
        store.write_timeline(name, features=feats(40), fmri=rng.standard_normal((25, 30)).astype(np.float32),
                             meta={"study": "S", "subject": "new", "space": space.to_dict()})
    with pytest.raises(SpaceMismatch, match="calibration timeline 'other' is subcortical"):
        run_adapt(subcortical_ckpt, store, ["same", "other"], tmp_path / "out", regularization=1.0,
                  log=lambda *_: None)
    assert cli_main(["adapt", str(subcortical_ckpt), "--store", str(store.path), "--timelines", "other",
                     "--regularization", "1.0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err and "other voxels" in err
    assert not (tmp_path / "out").exists()
    run_adapt(subcortical_ckpt, store, ["same"], tmp_path / "out", regularization=1.0, log=lambda *_: None)
    assert NForgeModel.from_pretrained(tmp_path / "out").output_space == fake_subcortical("a")


def test_loading_refuses_a_recorded_space_that_is_not_the_head(tmp_path, capsys):
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), tmp_path / "bad",
                 metadata={"output_space": fake_subcortical("a", n_outputs=8803).to_dict()})
    with pytest.raises(CheckpointError, match=r"bad/config.json field 'metadata.output_space'.*8,803.*30 columns"):
        NForgeModel.from_pretrained(tmp_path / "bad")
    store = make_store(tmp_path / "store")
    assert cli("--store", store.path, "--checkpoint", tmp_path / "bad", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) <= 2 and "output_space" in err and "Traceback" not in err
