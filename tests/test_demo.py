"""`nforge demo` end to end, once per output space, as a user runs it: a real subprocess in an environment where
PyTorch cannot be imported (the demo's install has none), its summary, figures and files."""

import json
import os
import subprocess
import sys
from pathlib import Path

WITHOUT_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed")
sys.meta_path.insert(0, NoTorch())
from nforge_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_runs_end_to_end_without_torch(tmp_path):
    # One epoch: the whole path (store, training, reload, scoring, attribution, figures), not the quality,
    # which BUILD.md records for the full demo. The demo's install has no PyTorch: torch imports fail here.
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "demo", "--out", str(tmp_path / "demo"),
                           "--epochs", "1", "--duration", "100"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n_outputs"] == 20484 and summary["space"] == "fsaverage5"
    for key in ("median_r", "median_r_over_ceiling", "seconds", "attribution_agreement", "median_noise_ceiling"):
        assert isinstance(summary[key], float), key
    assert -1.0 <= summary["median_r"] <= 1.0
    assert summary["ceiling_method"].startswith("repeats")
    # The test stimuli choose nothing: neither training nor validation saw them.
    assert summary["test_timelines"] and not set(summary["test_timelines"]) & set(summary["validation_timelines"])
    assert {"stim-13", "stim-14"} == {n.split("stimulus=")[1].split(",")[0] for n in summary["test_timelines"]}
    for label in ("ridge", "nearest", "none"):
        assert isinstance(summary["adaptation"][label]["median_r_over_ceiling"], float), label
    for path in summary["paths"].values():
        assert os.path.exists(path), path
    for name in ("maps_r", "maps_r_over_ceiling", "attribution_map", "adaptation", "contrast_map"):
        with open(summary["paths"][name], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert str(tmp_path / "demo") in proc.stdout
    check_contrast(summary, proc.stdout)


def check_contrast(summary, stdout):
    # One epoch trains nothing, so the AUC here is near chance: its value on a faithful model is checked in
    # tests/insilico/test_planted.py, on the full demo in BUILD.md. Here: the step ran and reported.
    contrast = summary["contrast"]
    assert contrast["name"] == "video - audio" and contrast["n_stimuli"] == 8 and contrast["n_heads"] == 2
    assert 0.0 <= contrast["auc"] <= 1.0 and 0.0 <= contrast["auc_average_subject"] <= 1.0
    assert 0 <= contrast["n_significant_fdr"] <= contrast["n_scored_outputs"] == summary["n_scored_outputs"]
    assert summary["paths"]["contrast_map"].endswith("figures/contrast_video_vs_audio.png")
    assert f"contrast video - audio (group of 2 subject heads): AUC {contrast['auc']:.3f} against the planted map" in stdout
    assert "[7/8] planted contrast" in stdout and "[8/8] rendering figures" in stdout


def test_subcortical_demo_runs_end_to_end(tmp_path):
    # The same path on the subcortical grid (one epoch): structures instead of HCP areas, MNI slices for maps.
    from nforge_jax.data.subcortical import load_grid

    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "demo", "--space", "subcortical", "--out",
                           str(tmp_path / "sub"), "--epochs", "1", "--duration", "100"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "sub" / "summary.json").read_text())
    assert summary["space"] == "subcortical" and summary["n_outputs"] == load_grid().n_voxels
    assert summary["scored_outputs"] == "grey matter" and summary["ceiling_method"].startswith("repeats")
    evaluation = json.loads(Path(summary["paths"]["evaluation_json"]).read_text())
    assert evaluation["space"]["name"] == "subcortical"
    assert {"left_thalamus", "right_putamen", "hippocampus"} <= {row["roi"] for row in evaluation["rois"]}
    for name in ("maps_r", "structures", "attribution_map", "planted_map", "adaptation", "contrast_map"):
        with open(summary["paths"][name], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    check_contrast(summary, proc.stdout)
