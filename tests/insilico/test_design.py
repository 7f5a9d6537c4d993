"""Experiment files: the contrast parser, and every refusal, in one line naming the file and the field, before
any prediction."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from contrast_helpers import FEATURES, ROWS, tiny_model, write_stimuli, write_yaml

from nforge_jax.insilico.design import DesignError, parse_contrast, plan_experiment, write_feature_stimulus

CONDITIONS = "conditions:\n  faces: [stim/faces/*.npz]\n  places: [stim/places/*.npz]\n"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def root(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("design")
    write_stimuli(root / "stim", model)
    return root


def refused(path, fieldname, *words, model=None):
    with pytest.raises(DesignError) as e:
        plan_experiment(path, model)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: field {fieldname!r}: "), text
    for word in words:
        assert word in text, text
    return text


def test_contrast_expressions_become_weights():
    conditions = ["speech", "music", "noise", "faces", "places"]
    assert parse_contrast("speech - (music + noise) / 2", conditions) == {"speech": 1.0, "music": -0.5,
                                                                          "noise": -0.5}
    assert parse_contrast("2 * faces - places * 2", conditions) == {"faces": 2.0, "places": -2.0}
    assert parse_contrast("-(places - faces)", conditions) == {"faces": 1.0, "places": -1.0}
    assert parse_contrast("faces", conditions) == {"faces": 1.0}
    assert parse_contrast("faces - places + places - places", conditions) == {"faces": 1.0, "places": -1.0}
    for bad in ("__import__('os').system('true')", "faces * places", "faces ** 2", "faces - places + 1",
                "faces / (places - places)", "faces.real", "faces - places / 0", "", "faces -"):
        with pytest.raises(DesignError):
            parse_contrast(bad, conditions)


def test_a_good_design_is_planned_with_its_settings(root, model):
    path = write_yaml(root / "good.yaml", "name: fp\nsubject: all\nwindow: {start: 6, end: 10}\nn_permutations: 500\n"
                      + CONDITIONS + "contrasts:\n  faces_vs_places: faces - places\n  faces: faces\n")
    design = plan_experiment(path, model)
    assert design.name == "fp" and design.subject == "all" and design.window == (6.0, 10.0)
    assert design.n_permutations == 500 and [len(v) for v in design.conditions.values()] == [6, 6]
    assert design.contrasts["faces_vs_places"].weights == {"faces": 1.0, "places": -1.0}
    assert design.contrasts["faces"].test == "sign-flip"
    # rows j whose response (j + 5 s) lies in [6, 10): j = 1, 2, 3, 4
    assert design.window_rows(np.arange(10.0)).nonzero()[0].tolist() == [1, 2, 3, 4]
    assert json.loads(json.dumps(design.to_dict()))["window"] == {"start": 6.0, "end": 10.0}


def test_empty_conditions_and_missing_files_are_refused(root):
    refused(write_yaml(root / "e1.yaml", "conditions:\n  faces: []\n  places: [stim/places/*.npz]\n"
                       "contrasts:\n  c: faces - places\n"), "conditions.faces", "non-empty list")
    refused(write_yaml(root / "e2.yaml", "conditions:\n  faces: [nothing/*.npz]\n  places: [stim/places/*.npz]\n"
                       "contrasts:\n  c: faces - places\n"), "conditions.faces[0]", "matches no file")
    refused(write_yaml(root / "e3.yaml", "conditions:\n  faces: [stim/faces/faces-0.npz, stim/faces/gone.npz]\n"
                       "  places: [stim/places/*.npz]\ncontrasts:\n  c: faces - places\n"), "conditions.faces[1]",
            "gone.npz", "no such file")
    refused(write_yaml(root / "e4.yaml", "conditions:\n  faces: [stim/faces]\n  places: [stim/places/*.npz]\n"
                       "contrasts:\n  c: faces - places\n"), "conditions.faces[0]", "folder")
    refused(write_yaml(root / "e5.yaml", "conditions:\n  faces: [good.yaml]\n  places: [stim/places/*.npz]\n"
                       "contrasts:\n  c: faces - places\n"), "conditions.faces[0]", "not a stimulus")


def test_a_stimulus_in_both_compared_conditions_is_refused(root):
    body = ("conditions:\n  faces: [stim/faces/*.npz, stim/places/places-0.npz]\n  places: [stim/places/*.npz]\n"
            "contrasts:\n  faces: faces\n  c: faces - places\n")
    text = refused(write_yaml(root / "overlap.yaml", body), "contrasts.c", "places-0.npz", "'faces' and 'places'")
    assert "contrasts.faces" not in text  # faces alone compares nothing


def test_weights_names_and_power_are_checked(root):
    refused(write_yaml(root / "w.yaml", CONDITIONS + "contrasts:\n  c: faces - 2 * places\n"), "contrasts.c",
            "sum to -1")
    refused(write_yaml(root / "u.yaml", CONDITIONS + "contrasts:\n  c: faces - houses\n"), "contrasts.c",
            "unknown condition", "houses")
    refused(write_yaml(root / "x.yaml", CONDITIONS + "contrasts:\n  c: open('x')\n"), "contrasts.c")
    few = "conditions:\n  faces: ['stim/faces/faces-[012].npz']\n  places: ['stim/places/places-[012].npz']\n"
    refused(write_yaml(root / "p1.yaml", few + "contrasts:\n  c: faces - places\n"), "contrasts.c",
            "20 relabellings", "add stimuli")
    refused(write_yaml(root / "p2.yaml", few + "contrasts:\n  c: faces\n"), "contrasts.c", "8 relabellings")
    refused(write_yaml(root / "n.yaml", CONDITIONS + "contrasts:\n  ../up: faces - places\n"), "contrasts.../up",
            "folder")


def test_fields_and_the_hemodynamic_window(root, model):
    contrasts = "contrasts:\n  c: faces - places\n"
    refused(write_yaml(root / "f.yaml", "condition: {}\n" + CONDITIONS + contrasts), "condition", "unknown field")
    refused(write_yaml(root / "w1.yaml", "window: {start: 0, end: 4}\n" + CONDITIONS + contrasts), "window",
            "hemodynamic offset")
    refused(write_yaml(root / "w2.yaml", "window: {start: 8, end: 6}\n" + CONDITIONS + contrasts), "window")
    refused(write_yaml(root / "w3.yaml", "window: first ten seconds\n" + CONDITIONS + contrasts), "window")
    refused(write_yaml(root / "a.yaml", "alpha: 2\n" + CONDITIONS + contrasts), "alpha")
    refused(write_yaml(root / "s.yaml", "subject: sub-z\n" + CONDITIONS + contrasts), "subject", "sub-z",
            model=model)
    refused(write_yaml(root / "w5.yaml", "window: {start: 20, end: 30}\n" + CONDITIONS + contrasts), "window",
            "is 10 s long", model=model)  # the stimuli are 10 s: their responses end by 15 s
    refused(write_yaml(root / "r1.yaml", "response: peak\n" + CONDITIONS + contrasts), "response", "'std'")
    refused(write_yaml(root / "r2.yaml", "response: std\n" + CONDITIONS + "contrasts:\n  c: faces\n"),
            "contrasts.c", "never below zero")
    assert plan_experiment(write_yaml(root / "r3.yaml", "response: std\n" + CONDITIONS + contrasts)).response == "std"
    early = write_yaml(root / "w4.yaml", "window: {start: 2, end: 9}\n" + CONDITIONS + contrasts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = plan_experiment(early, model)
    assert design.window == (2.0, 9.0)
    assert any("before the 5 s hemodynamic offset" in str(w.message) and str(early) in str(w.message)
               for w in caught)


def test_feature_files_of_another_recipe_rate_or_space_are_refused(root, model, tmp_path):
    rng = np.random.default_rng(1)
    good = {m: rng.standard_normal((ROWS, *d)).astype(np.float32) for m, d in FEATURES.items()}
    cases = {
        "recipe": ({"extract_recipe": {"text": "another"}}, good, "extraction recipe"),
        "rate": ({"feature_hz": 3.0}, good, "feature rate"),
        "space": ({"space": {"name": "subcortical", "n_outputs": 20484}}, good, "output space"),
        "shape": ({}, {**good, "video": good["video"][:, :, :4]}, "(T, 1, 8)"),
        "modality": ({}, {**good, "smell": good["video"]}, "smell"),
    }
    for name, (meta, feats, words) in cases.items():
        arrays = dict(feats)
        if meta:
            arrays["_meta"] = np.array(json.dumps(meta))
        np.savez(tmp_path / f"{name}.npz", **arrays)
        path = write_yaml(tmp_path / f"{name}.yaml", f"conditions:\n  faces: [{name}.npz, {root}/stim/faces/*.npz]\n"
                          f"  places: ['{root}/stim/places/*.npz']\ncontrasts:\n  c: faces - places\n")
        plan_experiment(path)  # without the checkpoint nothing is known to differ
        refused(path, "conditions.faces", f"{name}.npz", words, model=model)
    # what write_feature_stimulus records for this model passes
    write_feature_stimulus(tmp_path / "ok.npz", good, model)


def test_events_tables_are_read_and_checked(root, model, tmp_path):
    words = pd.DataFrame({"type": "Word", "start": [0.5, 1.0, 1.5], "duration": 0.3, "text": ["a", "b", "c"],
                          "timeline": "t1"})
    words.to_csv(tmp_path / "words.csv", index=False)
    two = pd.concat([words, words.assign(timeline="t2")])
    two.to_csv(tmp_path / "two.tsv", sep="\t", index=False)
    body = "conditions:\n  faces: [{}, '{}/stim/faces/*.npz']\n  places: ['{}/stim/places/*.npz']\n" \
           "contrasts:\n  c: faces - places\n"
    ok = plan_experiment(write_yaml(tmp_path / "ok.yaml", body.format("words.csv", root, root)), model)
    assert ok.conditions["faces"][0].kind == "events"
    refused(write_yaml(tmp_path / "two.yaml", body.format("two.tsv", root, root)), "conditions.faces",
            "timelines ['t1', 't2']", model=model)
