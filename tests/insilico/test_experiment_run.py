"""run_experiment end to end on feature stimuli with tiny checkpoints, on both output spaces: the outputs, their
traceability, the statistics against a computation from the cached predictions, resume, and `nforge contrast`."""

import csv
import json

import numpy as np
import pytest
from contrast_helpers import tiny_model, write_stimuli, write_yaml

from nforge_jax.data.timebase import HEMODYNAMIC_OFFSET_S
from nforge_jax.insilico.run import GROUP, ROI_COLUMNS, run_experiment, summary_lines, top_regions

EXPERIMENT = ("subject: all\nn_permutations: 200\nwindow: {start: 6, end: 12}\nconditions:\n  faces: [stim/faces/*.npz]\n"
              "  places: [stim/places/*.npz]\ncontrasts:\n  faces_vs_places: faces - places\n")


@pytest.fixture(scope="module")
def cortex(tmp_path_factory):
    """(root, checkpoint, model, experiment file, the first run's result) on fsaverage5."""
    from nforge_jax.inference.model import NForgeModel

    root = tmp_path_factory.mktemp("contrast")
    tiny_model().save(root / "ckpt")
    model = NForgeModel.from_pretrained(root / "ckpt", device="cpu")
    write_stimuli(root / "stim", model)
    path = write_yaml(root / "experiment.yaml", EXPERIMENT)
    result = run_experiment(path, model, root / "out", progress=False, figures=False)
    return root, root / "ckpt", model, path, result


def test_outputs_are_traceable_to_model_subjects_and_stimuli(cortex):
    root, _, model, path, result = cortex
    doc = json.loads((root / "out" / "contrast.json").read_text())
    assert doc["model_sha256"] == model.fingerprint() and doc["subjects"] == ["sub-a", "sub-b"]
    assert doc["maps"] == [GROUP, "sub-a", "sub-b"] and doc["space"]["name"] == "fsaverage5"
    assert {m["subject"] for m in doc["made_by"].values()} == {"sub-a", "sub-b"}
    assert all(m["model_sha256"] == model.fingerprint() for m in doc["made_by"].values())
    assert doc["design"]["source"] == str(path.resolve()) and doc["design"]["window"] == {"start": 6.0, "end": 12.0}
    assert len(doc["stimuli"]) == 12
    for record in doc["stimuli"]:
        stat = (root / "stim" / record["condition"] / record["path"].rsplit("/", 1)[1]).stat()
        assert record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns
        for key in record["cache_keys"].values():
            assert (root / "out" / "stimuli" / f"{key}.npz").is_file()
    summary = doc["contrasts"]["faces_vs_places"]["maps"][GROUP]
    assert summary["test"] == "label-permutation" and not summary["exact"] and summary["n_permutations"] == 200
    assert summary["n_stimuli"] == {"faces": 6, "places": 6}
    line = summary_lines(result)[0]
    assert line.startswith("faces_vs_places [faces - places] (group; label-permutation, 200 permutations")
    assert f"{summary['n_significant_fdr']} / 20484 outputs FDR" in line


def _window_means(root, doc, condition, head):
    rows = []
    for record in doc["stimuli"]:
        if record["condition"] == condition:
            with np.load(root / "out" / "stimuli" / f"{record['cache_keys'][head]}.npz") as z:
                times = z["times"]
                keep = (times + HEMODYNAMIC_OFFSET_S >= 6) & (times + HEMODYNAMIC_OFFSET_S < 12)
                assert keep.sum() == 6
                rows.append(z["preds"][keep].mean(0))
    return np.stack(rows)


def test_effects_and_group_map_follow_from_the_cached_predictions(cortex):
    root, _, model, _, _ = cortex
    doc = json.loads((root / "out" / "contrast.json").read_text())
    maps = np.load(root / "out" / "faces_vs_places" / "maps.npz")
    effects = {}
    for head in ("sub-a", "sub-b"):
        faces, places = _window_means(root, doc, "faces", head), _window_means(root, doc, "places", head)
        effects[head] = faces.mean(0) - places.mean(0)
        np.testing.assert_allclose(maps[f"{head}/effect"], effects[head], rtol=1e-5, atol=1e-6)
        welch = (faces.mean(0) - places.mean(0)) / np.sqrt(faces.var(0, ddof=1) / 6 + places.var(0, ddof=1) / 6)
        np.testing.assert_allclose(maps[f"{head}/t"], welch, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps[f"{GROUP}/effect"], (effects["sub-a"] + effects["sub-b"]) / 2, rtol=1e-5,
                               atol=1e-6)
    # the cache holds what the model predicts for the stimulus
    from nforge_jax.insilico.design import read_feature_stimulus

    record = doc["stimuli"][0]
    feats, _ = read_feature_stimulus(record["path"])
    with np.load(root / "out" / "stimuli" / f"{record['cache_keys']['sub-b']}.npz") as z:
        np.testing.assert_allclose(z["preds"], model.predict_features(feats, subject=1), rtol=1e-5, atol=1e-6)


def test_response_strength_is_the_temporal_std_over_the_window(cortex):
    root, _, model, _, _ = cortex
    path = write_yaml(root / "strength.yaml", EXPERIMENT.replace("subject: all\n", "subject: sub-a\nresponse: std\n"))
    run_experiment(path, model, root / "out_std", progress=False, figures=False)
    doc = json.loads((root / "out_std" / "contrast.json").read_text())
    assert doc["design"]["response"] == "std" and doc["maps"] == ["sub-a"]
    strength = {}
    for condition in ("faces", "places"):
        rows = []
        for record in doc["stimuli"]:
            if record["condition"] == condition:
                with np.load(root / "out_std" / "stimuli" / f"{record['cache_keys']['sub-a']}.npz") as z:
                    keep = (z["times"] + HEMODYNAMIC_OFFSET_S >= 6) & (z["times"] + HEMODYNAMIC_OFFSET_S < 12)
                    rows.append(z["preds"][keep].std(0))
        strength[condition] = np.stack(rows)
    maps = np.load(root / "out_std" / "faces_vs_places" / "maps.npz")
    np.testing.assert_allclose(maps["sub-a/effect"], strength["faces"].mean(0) - strength["places"].mean(0),
                               rtol=1e-5, atol=1e-6)


def test_roi_table_columns_and_regions(cortex):
    root = cortex[0]
    with open(root / "out" / "faces_vs_places" / "roi.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == ROI_COLUMNS
    group = [r for r in rows if r["map"] == GROUP]
    kinds = [r["kind"] for r in group]
    assert kinds.count("section") == 22 and kinds.count("area") == 360 and kinds.count("all") == 1
    assert {r["map"] for r in rows} == {GROUP, "sub-a", "sub-b"}
    for r in group:
        if r["kind"] == "area":
            assert float(r["ci_low"]) <= float(r["effect"]) <= float(r["ci_high"])
            assert 0.0 <= float(r["frac_fdr"]) <= 1.0 and float(r["frac_fwe"]) <= float(r["frac_fdr"]) + 1e-12
    maps = np.load(root / "out" / "faces_vs_places" / "maps.npz")
    everything = next(r for r in group if r["kind"] == "all")
    assert abs(float(everything["effect"]) - maps[f"{GROUP}/effect"].mean()) < 1e-5
    assert abs(float(everything["frac_fdr"]) - (maps[f"{GROUP}/p_fdr"] <= 0.05).mean()) < 1e-9


def test_a_rerun_predicts_nothing_and_a_changed_stimulus_only_itself(cortex, monkeypatch):
    root, _, model, path, _ = cortex
    cache = sorted((root / "out" / "stimuli").glob("*.npz"))
    before = {p.name: p.stat().st_mtime_ns for p in cache}
    calls = []
    original = model.predict_features
    monkeypatch.setattr(model, "predict_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = run_experiment(path, model, root / "out", progress=False, figures=False)
    assert calls == [] and again["stimuli_cache"]["written"] == [] and len(again["stimuli_cache"]["skipped"]) == 24
    assert {p.name: p.stat().st_mtime_ns for p in cache} == before
    touched = root / "stim" / "places" / "places-3.npz"
    touched.write_bytes(touched.read_bytes())  # same content, a new mtime: a new identity
    third = run_experiment(path, model, root / "out", progress=False, figures=False)
    assert len(calls) == 2 and len(third["stimuli_cache"]["written"]) == 2  # one stimulus, two heads


def test_a_bad_design_writes_nothing(cortex, tmp_path):
    from nforge_jax.insilico.design import DesignError

    root, _, model, _, _ = cortex
    bad = write_yaml(root / "bad_sum.yaml", EXPERIMENT.replace("faces - places", "faces + places"))
    with pytest.raises(DesignError, match="contrasts.faces_vs_places"):
        run_experiment(bad, model, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_subcortical_grid_through_the_same_calls_with_figures(tmp_path, chromium):
    from nforge_jax.data.spaces import subcortical_space
    from nforge_jax.data.subcortical import load_grid

    grid = load_grid()
    model = tiny_model(grid.n_voxels, metadata={"output_space": subcortical_space(grid).to_dict()}, seed=1)
    write_stimuli(tmp_path / "stim", model, counts=(("speech", 4), ("music", 4)))
    path = write_yaml(tmp_path / "sub.yaml", "conditions:\n  speech: [stim/speech/*.npz]\n  music: [stim/music/*.npz]\n"
                      "contrasts:\n  speech_vs_music: speech - music\n")
    result = run_experiment(path, model, tmp_path / "out", progress=False, figures=True)
    folder = tmp_path / "out" / "speech_vs_music"
    for name in ("effect.png", "t_fdr.png", "viewer.html", "viewer_effect.html", "roi.csv", "maps.npz"):
        assert (folder / name).stat().st_size > 0, name
    assert result["maps"] == ["average"]
    assert result["subjects"] == ["average"] and result["space"]["name"] == "subcortical"
    with open(folder / "roi.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    regions = {r["region"] for r in rows}
    assert {"all voxels", "grey matter", "thalamus", "left_putamen"} <= regions
    assert not any(r["kind"] in ("area", "section") for r in rows)
    assert np.load(folder / "maps.npz")["average/t"].shape == (grid.n_voxels,)
    check_viewer_opens(chromium, folder, ["t (average)", "t, FDR p <= 0.05 (average)", "t, FWE p <= 0.05 (average)"])


def check_viewer_opens(chromium, folder, t_labels):
    """Both viewer pages open offline in Chromium, drawn, without errors, each map a frame of the slider."""
    from browser import opened_page

    maps = [label[len("t ("):-1] for label in t_labels if label.startswith("t (")]
    effect_labels = [f"effect ({m})" for m in maps]
    for page_name, labels in (("viewer.html", t_labels), ("viewer_effect.html", effect_labels)):
        with opened_page(chromium, folder / page_name) as page:
            assert page.problems == [] and page.requests == [page.url_expected], page_name
            assert page.locator("#frame-label").text_content() == labels[0], page_name
            assert int(page.locator("#slider").get_attribute("max") or 0) == len(labels) - 1, page_name


def test_the_cortex_pages_open_in_the_browser_viewer(cortex, tmp_path, chromium):
    root, _, model, path, _ = cortex
    run_experiment(path, model, tmp_path / "out", progress=False, figures=True)
    labels = [f"{kind} ({m})" for m in (GROUP, "sub-a", "sub-b")
              for kind in ("t", "t, FDR p <= 0.05", "t, FWE p <= 0.05")]
    check_viewer_opens(chromium, tmp_path / "out" / "faces_vs_places", labels)


def test_nforge_contrast_on_the_command_line(cortex, tmp_path, capsys):
    from nforge_jax.cli import main

    root, ckpt, _, path, _ = cortex
    rc = main(["contrast", str(path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--no-figures",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[0].startswith("faces_vs_places [faces - places] (group;")
    assert "nforge contrast: 1 contrast over 12 stimuli (24 predictions made, 0 reused)" in out
    assert (tmp_path / "out" / "contrast.json").is_file()
    bad = write_yaml(root / "bad_name.yaml", EXPERIMENT.replace("faces - places", "faces - houses"))
    rc = main(["contrast", str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "bad_out")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[0].startswith(f"nforge contrast: error: {bad}: field 'contrasts.faces_vs_places'")
    assert "houses" in err[0] and not (tmp_path / "bad_out").exists()


def test_events_tables_and_text_files_are_extracted_once_and_predicted(tiny_models, tmp_path):
    """The media path: Word events tables and .txt files, features with the checkpoint's recipe (tiny models)."""
    import pandas as pd
    from extract_helpers import WORDS
    from flax import nnx

    from nforge_jax.extract.recipe import ExtractConfig
    from nforge_jax.extract.text import TextConfig
    from nforge_jax.model import EncoderConfig, FmriEncoder
    from nforge_jax.model.checkpoint import save_encoder

    config = EncoderConfig(feature_dims=(("text", 2, 32),), n_outputs=20484, n_output_timesteps=10, hidden=32,
                           depth=1, heads=1, low_rank_head=8, n_subjects=1)
    recipe = ExtractConfig(text=TextConfig(model_id=str(tiny_models["text"]), layers=(0.5, 1.0)))
    save_encoder(FmriEncoder(config, rngs=nnx.Rngs(0)), tmp_path / "ckpt", metadata={"extract_recipe": recipe.to_dict()})
    for i in range(4):
        words = WORDS[i: i + 10]
        pd.DataFrame({"type": "Word", "start": 0.5 * np.arange(10), "duration": 0.4, "text": words,
                      "language": "english", "timeline": f"read-{i}"}).to_csv(tmp_path / f"read-{i}.csv", index=False)
        (tmp_path / f"story-{i}.txt").write_text(" ".join(WORDS[-(i + 8):]) + "\n")
    path = write_yaml(tmp_path / "text.yaml", "conditions:\n  read: ['read-*.csv']\n  story: ['story-*.txt']\n"
                      "contrasts:\n  read_vs_story: read - story\n")
    result = run_experiment(path, tmp_path / "ckpt", tmp_path / "out", progress=False, figures=False)
    assert len(result["stimuli_cache"]["written"]) == 8 and result["subjects"] == ["average"]
    kinds = {r["kind"] for r in result["stimuli"]}
    assert kinds == {"events", "media"} and all(r["n_rows"] >= 4 for r in result["stimuli"])
    assert np.isfinite(np.load(tmp_path / "out" / "read_vs_story" / "maps.npz")["average/t"]).all()
    again = run_experiment(path, tmp_path / "ckpt", tmp_path / "out", progress=False, figures=False)
    assert again["stimuli_cache"]["written"] == []


def test_top_regions_show_both_ends_of_a_contrast():
    effects = {"A": 0.9, "B": 0.5, "C": 0.1, "D": -0.2, "E": -0.8, "S": 5.0, "F": float("nan")}
    rows = [{"region": k, "kind": "section" if k == "S" else "area", "effect": v} for k, v in effects.items()]
    assert [r["region"] for r in top_regions(rows, "fsaverage5", 4)] == ["A", "B", "E", "D"]
    # a one-sided contrast: the other end is filled from the side that has regions
    one_sided = [r for r in rows if r["region"] in "ABC"]
    assert [r["region"] for r in top_regions(one_sided, "fsaverage5", 4)] == ["A", "B", "C"]
    assert [r["region"] for r in top_regions(rows[3:5], "fsaverage5", 2)] == ["E", "D"]
