"""Every result knows what made it, and every pairing is checked: the cases a careful but fallible user meets,
each through the command line where one exists (`nforge_jax.cli.main`, its parser and one-line errors)."""

import json
import shutil

import numpy as np
import pytest

from nforge_jax.cli import main
from nforge_jax.data.store import FeatureStore

RECIPE = {"text": {"model_id": "tiny-llama", "layers": [0.5, 1.0], "layer_aggregation": "group_mean"}}
OTHER_RECIPE = {"text": {"model_id": "tiny-llama", "layers": [0.25, 1.0], "layer_aggregation": "group_mean"}}
N_OUT = 30


def _model(seed, metadata):
    from flax import nnx

    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    config = EncoderConfig(feature_dims=(("text", 1, 8),), n_outputs=N_OUT, n_output_timesteps=5, hidden=64,
                           depth=1, heads=2, low_rank_head=8, n_subjects=2)
    return NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(seed)), device="cpu", metadata=metadata)


def _write(store, name, *, study="Toy", subject="p0", stimulus="a", steps=80, samples=45, seed=0, recipe=RECIPE,
           **meta):
    rng = np.random.default_rng(seed)
    store.write_timeline(name, features={"text": rng.standard_normal((steps, 1, 8)).astype(np.float32)},
                         fmri=rng.standard_normal((samples, N_OUT)).astype(np.float32),
                         meta={"study": study, "subject": subject, "stimulus": stimulus, "tr_s": 1.0,
                               "extract_recipe": recipe, **meta})


def tl(subject, stimulus="a"):
    return f"Toy:stimulus={stimulus},subject={subject}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Checkpoints A and B (other weights) naming training subjects Toy/p0 and Toy/p1, a checkpoint U naming
    none, and a store of both subjects' runs of stimuli a and b (plus stores of other rates, recipes, lengths)."""
    tmp = tmp_path_factory.mktemp("prov")
    names = {"subjects": ["Toy/p0", "Toy/p1"], "extract_recipe": {"format": 1, "modalities": ["text"], **RECIPE}}
    _model(0, names).save(tmp / "A")
    _model(1, names).save(tmp / "B")
    _model(0, {"extract_recipe": names["extract_recipe"]}).save(tmp / "U")
    store = FeatureStore.create(tmp / "store")
    for k, (subject, stimulus) in enumerate([("p0", "a"), ("p1", "a"), ("p0", "b"), ("p1", "b")]):
        _write(store, tl(subject, stimulus), subject=subject, stimulus=stimulus, seed=k)
    odd = FeatureStore.create(tmp / "odd")
    _write(odd, "slow", feature_hz=1.0)
    _write(odd, "other-recipe", recipe=OTHER_RECIPE)
    _write(odd, "short", steps=8, samples=4)  # 4 s of stimulus: shorter than the 5 s hemodynamic offset
    return tmp


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args):
    code, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 2, err
    return lines[0]


def test_another_subjects_head_is_refused_unless_allowed_and_then_named(world, tmp_path, capsys):
    store, out = world / "store", tmp_path / "p0_on_p1"
    for subject in ("0", "Toy/p0", "p0"):  # an index, the full name, the name without the study
        line = refused(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", out, "--subject",
                       subject, "--timeline", tl("p1"), "--no-progress")
        assert ("predictions use subject Toy/p0's head, store timeline 'Toy:stimulus=a,subject=p1' is subject Toy/p1; "
                "pass --allow-other-subject") in line, line
        assert not out.exists()  # a refused run leaves nothing behind
    code, printed, err = cli(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", out,
                             "--subject", "p0", "--timeline", tl("p1"), "--allow-other-subject", "--no-progress")
    assert code == 0, err
    assert "allowed: subject Toy/p0's head on timeline 'Toy:stimulus=a,subject=p1' of subject Toy/p1" in printed
    record = next(json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "nforge_predictions.json")
    assert record["subject"] == "Toy/p0" and record["allowed"] == ["other_subject"]
    assert record["identity"]["subject"] == "Toy/p1"
    # scoring it is another deliberate pairing
    line = refused(capsys, "evaluate", out, "--store", store, "--n-boot", "0", "--no-figures")
    assert "predictions use subject Toy/p0's head, store timeline 'Toy:stimulus=a,subject=p1' is subject Toy/p1" in line
    code, printed, err = cli(capsys, "evaluate", out, "--store", store, "--n-boot", "0", "--no-figures",
                             "--allow-other-subject", "--ceiling", "none", "--out", tmp_path / "ev")
    assert code == 0, err
    assert "predictions: subject Toy/p0's head of model" in printed and "allowed: other_subject" in printed
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["provenance"]["predictions"]["subject"] == "Toy/p0"
    assert doc["provenance"]["notes"] == ["subject Toy/p0's head on timeline 'Toy:stimulus=a,subject=p1' of subject "
                                          "Toy/p1"]


def test_own_and_average_heads_are_scored_without_a_flag_and_recorded(world, tmp_path, capsys):
    store = world / "store"
    own, avg = tmp_path / "own", tmp_path / "avg"
    assert cli(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", own, "--subject", "p1",
               "--timeline", tl("p1"), "--timeline", tl("p1", "b"), "--no-progress")[0] == 0
    assert cli(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", avg, "--no-progress")[0] == 0
    marker = json.loads((avg / "nforge_predictions.json").read_text())
    from nforge_jax.inference.model import NForgeModel

    model = NForgeModel.from_pretrained(world / "A")
    assert marker["model_sha256"] == model.fingerprint() and marker["subject"] == "average"
    assert marker["feature_hz"] == 2.0 and marker["extract_recipe"]["text"] == RECIPE["text"]
    assert marker["space"] == model.output_space.to_dict() and marker["space"]["n_outputs"] == N_OUT
    records = [json.loads(p.read_text()) for p in avg.glob("*.json") if p.name != "nforge_predictions.json"]
    assert len(records) == 4
    for rec in records:
        assert rec["model_sha256"] == marker["model_sha256"] and rec["subject"] == "average"
        ident = rec["identity"]
        assert ident["timeline"] == rec["name"] and ident["study"] == "Toy"
        assert ident["subject"] == "Toy/" + rec["name"].split("subject=")[1]
        assert ident["stimulus"] == rec["name"].split("stimulus=")[1].split(",")[0]
    for pred, who in ((own, "subject Toy/p1's head"), (avg, "the average subject's head")):
        code, printed, err = cli(capsys, "evaluate", pred, "--store", store, "--n-boot", "0", "--no-figures",
                                 "--ceiling", "none", "--out", tmp_path / f"ev_{pred.name}")
        assert code == 0, err
        assert f"predictions: {who} of model {marker['model_sha256'][:12]}" in printed
        doc = json.loads((tmp_path / f"ev_{pred.name}" / "evaluation.json").read_text())
        assert doc["provenance"]["notes"] == []
        assert {t["timeline"] for t in doc["provenance"]["timelines"]} == set(doc["timelines"])


def test_shards_of_one_directory_must_share_the_checkpoint(world, tmp_path, capsys):
    store, out = world / "store", tmp_path / "mixed"
    assert cli(capsys, "predict", "--store", store, "--checkpoint", world / "B", "--out", out, "--shard", "1/2",
               "--no-progress")[0] == 0
    # the first shard to run claimed the directory, whichever it was
    line = refused(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", out, "--shard", "0/2",
                   "--no-progress")
    assert "made by a different checkpoint (weights or metadata): model_sha256" in line, line
    assert len([p for p in out.glob("*.npy")]) == 2  # only shard 1's timelines
    # a directory mixed by hand (a record copied from another run) is refused by evaluate
    cli(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", tmp_path / "a", "--no-progress")
    for p in (tmp_path / "a").glob("*"):
        if p.name != "nforge_predictions.json" and not (out / p.name).exists():
            shutil.copy(p, out / p.name)
    line = refused(capsys, "evaluate", out, "--store", store, "--n-boot", "0", "--no-figures")
    assert "come from different checkpoints: model_sha256" in line and "predict into a new --out" in line, line


def test_features_of_another_rate_are_refused_everywhere(world, tmp_path, capsys):
    odd = world / "odd"
    line = refused(capsys, "predict", "--store", odd, "--checkpoint", world / "A", "--out", tmp_path / "p",
                   "--timeline", "slow", "--no-progress")
    assert "timeline 'slow'" in line and "meta feature_hz is 1.0, the model reads features at 2 Hz" in line
    line = refused(capsys, "adapt", world / "A", "--store", odd, "--timelines", "slow", "--out", tmp_path / "ad")
    assert "meta feature_hz is 1.0, the model reads features at 2 Hz" in line and not (tmp_path / "ad").exists()
    # predictions made at 2 Hz, scored against a store whose timeline of the same name is at 1 Hz
    twin = FeatureStore.create(tmp_path / "twin")
    _write(twin, "slow")
    assert cli(capsys, "predict", "--store", twin.path, "--checkpoint", world / "A", "--out", tmp_path / "p",
               "--no-progress")[0] == 0
    line = refused(capsys, "evaluate", tmp_path / "p", "--store", odd, "--timelines", "slow", "--n-boot", "0")
    assert "timeline 'slow'" in line and "feature_hz" in line, line


def test_adapt_calibrates_one_subject_of_the_models_recipe(world, tmp_path, capsys):
    store = world / "store"
    line = refused(capsys, "adapt", world / "A", "--store", store, "--timelines", tl("p0"), tl("p1"), "--out",
                   tmp_path / "two")
    assert ("timelines 'Toy:stimulus=a,subject=p0' (subject Toy/p0) and 'Toy:stimulus=a,subject=p1' (subject "
            "Toy/p1) are runs of different subjects") in line, line
    line = refused(capsys, "adapt", world / "A", "--store", world / "odd", "--timelines", "other-recipe", "--out",
                   tmp_path / "recipe")
    assert "extracted with another recipe than the model's (text.layers: [0.5, 1.0] (model) vs [0.25, 1.0]" in line
    line = refused(capsys, "adapt", world / "A", "--store", store, "--timelines", tl("p0"), tl("p0"), "--out",
                   tmp_path / "twice")
    assert "timeline 'Toy:stimulus=a,subject=p0' is given twice" in line
    line = refused(capsys, "adapt", world / "A", "--store", world / "odd", "--timelines", "short", "--out",
                   tmp_path / "short")
    assert "'short' gives 0 prediction rows with fMRI" in line and "hemodynamic offset 5 s" in line, line
    for d in ("two", "recipe", "twice", "short"):
        assert not (tmp_path / d).exists()


def test_an_adapted_name_is_picked_and_its_subject_checked(world, tmp_path, capsys):
    store = world / "store"
    # U names no training subject (as a converted release): the adapted head is found by its --name all the same
    code, printed, err = cli(capsys, "adapt", world / "U", "--store", store, "--timelines", tl("p1"), tl("p1", "b"),
                             "--out", tmp_path / "ad", "--name", "alice", "--regularization", "1.0")
    assert code == 0, err
    from nforge_jax.inference.model import NForgeModel

    base = NForgeModel.from_pretrained(world / "U")
    adapted = NForgeModel.from_pretrained(tmp_path / "ad")
    entry = adapted.metadata["adapted_subjects"][-1]
    assert entry["name"] == "alice" and entry["calibration_subjects"] == ["Toy/p1"]
    assert entry["base_model_sha256"] == base.fingerprint() and entry["feature_hz"] == 2.0
    assert [c["timeline"] for c in entry["calibration"]] == [tl("p1"), tl("p1", "b")]
    code, printed, err = cli(capsys, "predict", "--store", store, "--checkpoint", tmp_path / "ad", "--out",
                             tmp_path / "alice", "--subject", "alice", "--timeline", tl("p1"), "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "alice" / "nforge_predictions.json").read_text())["subject"] == "alice"
    line = refused(capsys, "predict", "--store", store, "--checkpoint", tmp_path / "ad", "--out", tmp_path / "x",
                   "--subject", "alice", "--timeline", tl("p0"), "--no-progress")
    assert "predictions use subject alice's head, store timeline 'Toy:stimulus=a,subject=p0' is subject Toy/p0" in line


def test_a_timeline_is_never_paired_with_itself(world, tmp_path, capsys):
    store, out = world / "store", tmp_path / "pred"
    assert cli(capsys, "predict", "--store", store, "--checkpoint", world / "A", "--out", out, "--no-progress")[0] == 0
    line = refused(capsys, "evaluate", out, "--store", store, "--timelines", tl("p0"), tl("p0"), "--n-boot", "0")
    assert "timeline 'Toy:stimulus=a,subject=p0' is given twice" in line


def test_the_subject_ceiling_pairs_stimuli_within_one_study(tmp_path):
    from nforge_jax.inference.evaluate import evaluate

    rng = np.random.default_rng(0)
    store = FeatureStore.create(tmp_path / "s")
    signal = rng.standard_normal((45, N_OUT)).astype(np.float32)
    preds = {}
    for study in ("StudyA", "StudyB"):  # each study's own "run-1": two stimuli that share a label
        name = f"{study}:run-1"
        store.write_timeline(name, features={"text": np.zeros((80, 1, 8), np.float32)},
                             fmri=signal + 0.3 * rng.standard_normal(signal.shape).astype(np.float32),
                             meta={"study": study, "subject": "s1", "stimulus": "run-1", "tr_s": 1.0})
        preds[name] = rng.standard_normal((40, N_OUT)).astype(np.float32)
    ev = evaluate(preds, store, n_boot=0, rois=None)
    assert ev.ceiling_method == "none" and np.isnan(ev.ceiling).all()
    with pytest.raises(ValueError, match="no evaluated stimulus"):
        evaluate(preds, store, n_boot=0, rois=None, ceiling="subjects")


def test_a_record_pointing_outside_its_directory_is_refused(world, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli(capsys, "predict", "--store", world / "store", "--checkpoint", world / "A", "--out", out,
               "--no-progress")[0] == 0
    elsewhere = tmp_path / "elsewhere.npy"
    rec_path = next(p for p in out.glob("*.json") if p.name != "nforge_predictions.json")
    rec = json.loads(rec_path.read_text())
    shutil.copy(out / rec["file"], elsewhere)
    rec["file"] = "../elsewhere.npy"
    rec_path.write_text(json.dumps(rec))
    line = refused(capsys, "evaluate", out, "--store", world / "store", "--n-boot", "0")
    assert "field 'file' is '../elsewhere.npy', expected a file name inside" in line, line


def test_an_old_prediction_directory_is_refused_with_a_rerun_hint(world, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli(capsys, "predict", "--store", world / "store", "--checkpoint", world / "A", "--out", out,
               "--no-progress")[0] == 0
    marker = json.loads((out / "nforge_predictions.json").read_text())
    old = {k: v for k, v in marker.items() if k not in ("provenance", "subject_keys", "subject_index",
                                                        "feature_hz", "extract_recipe", "allowed")}
    old["version"] = 2
    (out / "nforge_predictions.json").write_text(json.dumps(old))
    line = refused(capsys, "evaluate", out, "--store", world / "store", "--n-boot", "0")
    assert "recorded no provenance" in line and f"re-run `nforge predict ... --out {out} --overwrite`" in line
    line = refused(capsys, "predict", "--store", world / "store", "--checkpoint", world / "A", "--out", out,
                   "--no-progress")
    assert "older nforge predict that recorded no provenance" in line


def test_streaming_refuses_non_finite_frames(world):
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.streaming import StreamingPredictor

    model = NForgeModel.from_pretrained(world / "A")
    stream = StreamingPredictor.from_nforge_model(model, window_trs=5)
    good = np.zeros((2, 1, 8), np.float32)
    for value in (np.nan, np.inf):
        bad = good.copy()
        bad[1, 0, 3] = value
        with pytest.raises(ValueError, match=r"features\['text'\] of frame 0: row 1 holds (nan|inf)"):
            stream.push_frame({"text": bad})
    for _ in range(5):
        stream.push_frame({"text": good})  # the refused frames left nothing in the window
    assert np.isfinite(stream.flush()).all()


def test_variance_shares_record_their_provenance_and_name_short_runs(world):
    from nforge_jax.inference.attribution import store_variance_shares
    from nforge_jax.inference.model import NForgeModel

    model = NForgeModel.from_pretrained(world / "A")
    shares = store_variance_shares(model, world / "store", [tl("p1")], subject="p1", n_steps=2)
    made = shares["provenance"]["made_by"]
    assert [m["subject"] for m in made] == ["Toy/p1"] and made[0]["model_sha256"] == model.fingerprint()
    assert shares["provenance"]["timelines"][0]["subject"] == "Toy/p1"
    with pytest.raises(ValueError, match="predictions use subject Toy/p0's head"):
        store_variance_shares(model, world / "store", [tl("p1")], subject="p0", n_steps=2)
    with pytest.raises(ValueError, match=r"timeline 'short': 0 of its 4 prediction rows have a measured sample "
                                         r"\(4 fMRI samples, hemodynamic offset 5 s\)"):
        store_variance_shares(model, world / "odd", ["short"], n_steps=2)


def test_slurm_without_a_task_index_is_one_line(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    line = refused(capsys, "predict", "--store", world / "store", "--checkpoint", world / "A", "--out",
                   tmp_path / "p", "--no-progress")
    assert "SLURM_PROCID: SLURM_NTASKS is 4 but SLURM_PROCID is None" in line and "--shard I/N" in line


# ------------------------------------------------------------------- found by misusing the newer entry points

def test_a_prediction_file_changed_or_a_record_damaged_after_predict_is_refused(world, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli(capsys, "predict", "--store", world / "store", "--checkpoint", world / "A", "--out", out,
               "--no-progress")[0] == 0
    records = sorted(p for p in out.glob("*.json") if p.name != "nforge_predictions.json")
    first = json.loads(records[0].read_text())
    np.save(out / first["file"], np.load(out / first["file"])[:10])  # cut after it was written
    line = refused(capsys, "evaluate", out, "--store", world / "store", "--n-boot", "0")
    assert f"{first['file']}: shape (10, 30) / checksum differ from its record (shape (40, 30))" in line, line
    line = refused(capsys, "view", out, "--timeline", first["name"], "--out", tmp_path / "v.html")
    assert "checksum differ from its record" in line
    records[1].write_text('{"name": "x", "file": ')  # a damaged record is named, not silently left out
    line = refused(capsys, "evaluate", out, "--store", world / "store", "--n-boot", "0")
    assert f"prediction record {records[1]}: unreadable" in line, line


def test_bootstrap_intervals_need_enough_blocks(world):
    from nforge_jax.inference.evaluate import evaluate

    store = FeatureStore.open(world / "store")
    rng = np.random.default_rng(0)
    preds = {tl("p0"): rng.standard_normal((40, N_OUT)).astype(np.float32)}
    ev = evaluate(preds, store, n_boot=200, rois=None, ceiling="none")  # 40 samples: 1.6 blocks of 25 s
    assert ev.roi("all vertices")["median_r_ci_low"] is None
    assert "no bootstrap intervals: 40 samples hold 1.6 blocks" in ev.info["note"]
    ev = evaluate(preds, store, n_boot=200, rois=None, ceiling="none", block_s=5)
    row = ev.roi("all vertices")
    assert row["median_r_ci_low"] <= row["median_r"] <= row["median_r_ci_high"]


def test_attribution_and_attention_refuse_non_finite_features(world):
    from nforge_jax.inference.attention import AttentionExtractor
    from nforge_jax.inference.attribution import ModalityAttributor
    from nforge_jax.inference.model import NForgeModel

    model = NForgeModel.from_pretrained(world / "A")
    x = np.random.default_rng(0).standard_normal((10, 1, 8)).astype(np.float32)
    x[3, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"inputs\['text'\]: row 3 holds nan"):
        ModalityAttributor(model, method="gradient").attribute({"text": x})
    with pytest.raises(ValueError, match=r"inputs\['text'\]: row 3 holds nan"):
        ModalityAttributor(model, method="gradient").attribute_timesteps({"text": x}, [0, 1])
    with pytest.raises(ValueError, match=r"inputs\['text'\]: row 3 holds nan"):
        AttentionExtractor(model).roi_scores({"text": x}, {"a": np.array([0, 1])})
    with pytest.raises(ValueError, match=r"n_steps: expected an integer in \[1, 1024\]"):
        ModalityAttributor(model, method="gradient", n_steps=10**6)


def test_new_subject_names_cannot_pass_for_ids_or_the_average(world, tmp_path, capsys):
    from nforge_jax.inference.adapt import check_subject_name, default_subject_name
    from nforge_jax.inference.model import NForgeModel

    model = NForgeModel.from_pretrained(world / "A")
    for bad, why in (("average", "the shared average subject"), ("None", "the shared average subject"),
                     ("-1", "is a number"), ("1e3", "is a number"), (" p9", "surrounding blanks"),
                     ("a\nb", "control characters"), ("Toy/p0", "already has a subject named")):
        with pytest.raises(ValueError, match=why):
            check_subject_name(model, bad)
    model.metadata["adapted_subjects"] = [{"id": 7, "name": "adapted/2"}]
    assert default_subject_name(model, 2) == "adapted/2-1"  # a taken default is skipped, not refused
    line = refused(capsys, "adapt", world / "A", "--store", world / "store", "--timelines", tl("p1"), "--out",
                   tmp_path / "ad", "--name", "average")
    assert "--name: 'average' is the word for the shared average subject" in line, line


def test_streaming_refuses_infinite_tr_and_non_numeric_frames(world):
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.streaming import StreamingPredictor

    model = NForgeModel.from_pretrained(world / "A")
    with pytest.raises(ValueError, match="tr_seconds: expected a finite positive number"):
        StreamingPredictor.from_nforge_model(model, window_trs=5, tr_seconds=float("inf"))
    stream = StreamingPredictor.from_nforge_model(model, window_trs=5)
    with pytest.raises(ValueError, match=r"features\['text'\]: expected real numbers, got dtype <U1"):
        stream.push_frame({"text": np.array([["a"] * 8])})


def test_view_names_arrays_it_cannot_show_and_shows_constant_maps(tmp_path, capsys):
    np.save(tmp_path / "complex.npy", np.ones(20484, np.complex64))
    np.save(tmp_path / "object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "text.npy", np.array(["a"] * 20484))
    for name, why in (("complex", "values: dtype complex64, expected real numbers"),
                      ("object", "not a numeric array file"), ("text", "values: dtype <U1, expected real numbers")):
        line = refused(capsys, "view", tmp_path / f"{name}.npy", "--out", tmp_path / f"{name}.html")
        assert f"{tmp_path / name}.npy: {why}" in line, line
    np.save(tmp_path / "constant.npy", np.full((2, 20484), 3.0, np.float32))
    code, printed, err = cli(capsys, "view", tmp_path / "constant.npy", "--out", tmp_path / "constant.html")
    assert code == 0 and (tmp_path / "constant.html").stat().st_size > 0, err


def test_features_and_fmri_of_different_lengths_are_refused(world, tmp_path, capsys):
    """10 s of features stored with 400 s of fMRI (another run's recording): training, adapt and evaluate would
    use only the overlap without a word."""
    from nforge_jax.data.store import PipelineError
    from nforge_jax.data.windows import WindowSource

    store = FeatureStore.create(tmp_path / "misfit")
    _write(store, "misfit", steps=20, samples=400)
    expected = "its features cover 10 s but its fMRI 400 s"
    line = refused(capsys, "adapt", world / "A", "--store", store.path, "--timelines", "misfit", "--out",
                   tmp_path / "ad")
    assert "timeline 'misfit'" in line and expected in line and not (tmp_path / "ad").exists(), line
    # predicting needs no fMRI, so it goes through; scoring those rows is refused
    assert cli(capsys, "predict", "--store", store.path, "--checkpoint", world / "U", "--out", tmp_path / "p",
               "--no-progress")[0] == 0
    line = refused(capsys, "evaluate", tmp_path / "p", "--store", store.path, "--n-boot", "0")
    assert "timeline 'misfit'" in line and expected in line, line
    with pytest.raises(PipelineError, match=expected):
        WindowSource(store, ["misfit"], subjects_index={"Toy/p0": 0})
