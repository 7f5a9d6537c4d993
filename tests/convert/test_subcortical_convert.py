"""TRIBE v2 subcortical checkpoints (MaskProjector(mask="subcortical", resolution=2), a head of n_voxels):
converted with their output space, exported back bit-exactly, predicting as the PyTorch reference does, and
refused in one line when the head's voxel count is not the grid's that loads here."""

import numpy as np
import pytest
import torch
import yaml

from helpers import SMALL_DIMS, make_release, random_features, rel_err, run_both
from nforge_jax.cli import main as cli_main
from nforge_jax.convert.tribev2 import convert_tribev2, export_tribev2
from nforge_jax.data.spaces import fsaverage5_space, subcortical_space
from nforge_jax.data.subcortical import ATLAS_ENV, load_grid
from nforge_jax.inference.model import NForgeModel
from nforge_jax.model.checkpoint import CheckpointError, load_encoder, save_encoder

# As neuralset 0.0.2's FmriExtractor(...).model_dump() writes it into the release's config.yaml.
SUBCORTICAL_NEURO = {"event_types": "Fmri", "frequency": 1.0, "offset": 5.0, "fwhm": 6.0,
                     "projection": {"mask": "subcortical", "resolution": 2, "name": "MaskProjector"},
                     "name": "FmriExtractor"}
TINY = dict(hidden=96, depth=1, heads=3, low_rank_head=8, n_subjects=2)


@pytest.fixture(scope="module")
def grid():
    return load_grid()


@pytest.fixture(autouse=True)
def offline_grid(monkeypatch):
    monkeypatch.delenv(ATLAS_ENV, raising=False)


def subcortical_release(path, n_outputs, **kw):
    return make_release(path, n_outputs=n_outputs, data={"neuro": SUBCORTICAL_NEURO}, **TINY, **kw)


def test_subcortical_release_converts_with_its_space_and_exports_bit_exactly(tmp_path, grid):
    subcortical_release(tmp_path / "rel", grid.n_voxels)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    _, meta = load_encoder(tmp_path / "ckpt")
    assert meta["output_space"]["name"] == "subcortical"
    model = NForgeModel.from_pretrained(tmp_path / "ckpt")
    assert model.output_space.key() == subcortical_space(grid).key()
    assert model.output_space.n_outputs == 8803 and model.config.n_outputs == 8803

    export_tribev2(tmp_path / "ckpt", tmp_path / "back")
    a = torch.load(tmp_path / "rel" / "best.ckpt", weights_only=True)
    b = torch.load(tmp_path / "back" / "best.ckpt", weights_only=True)
    assert list(a["state_dict"]) == list(b["state_dict"])
    assert b["state_dict"]["model.predictor.weights"].shape == (3, 8, 8803)
    for key, value in a["state_dict"].items():
        assert b["state_dict"][key].dtype == value.dtype and torch.equal(b["state_dict"][key], value), key
    assert b["model_build_args"]["n_outputs"] == 8803
    assert (tmp_path / "back" / "config.yaml").read_text() == (tmp_path / "rel" / "config.yaml").read_text()


def test_converted_subcortical_model_predicts_as_the_reference(tmp_path, grid):
    ref = subcortical_release(tmp_path / "rel", grid.n_voxels, seed=3)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    model, _ = load_encoder(tmp_path / "ckpt")
    feats = random_features(SMALL_DIMS, 2, 20, seed=4)
    r, j = run_both(ref, model, feats)  # average subject row
    assert j.shape == (2, 10, grid.n_voxels)
    assert rel_err(j, r) <= 1e-5
    r, j = run_both(ref, model, feats, [1, 0])
    assert rel_err(j, r) <= 1e-5


def test_voxel_count_of_another_atlas_is_refused_in_one_line(tmp_path, grid, capsys):
    # TRIBE v2's FSL grid keeps 8,802 voxels; the offline rebuild loaded here keeps 8,803.
    subcortical_release(tmp_path / "rel", grid.n_voxels - 1)
    with pytest.raises(CheckpointError) as err:
        convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    text = str(err.value)
    assert "8,802" in text and "8,803" in text and ATLAS_ENV in text and "\n" not in text
    assert not (tmp_path / "ckpt").exists()
    assert cli_main(["convert", "tribev2", str(tmp_path / "rel"), str(tmp_path / "ckpt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 2 and ATLAS_ENV in lines[0] and "Traceback" not in "".join(lines)
    assert not (tmp_path / "ckpt").exists()


def test_cortical_projection_needs_the_cortex(tmp_path):
    neuro = {"name": "FmriExtractor", "projection": {"name": "SurfaceProjector", "mesh": "fsaverage5"}}
    make_release(tmp_path / "rel", n_outputs=40, data={"neuro": neuro}, **TINY)
    with pytest.raises(CheckpointError, match="fsaverage5.*40 outputs"):
        convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")


def test_release_without_projection_keeps_the_legacy_inference(tmp_path):
    make_release(tmp_path / "rel", n_outputs=40, **TINY)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    space = NForgeModel.from_pretrained(tmp_path / "ckpt").output_space
    assert (space.name, space.n_outputs) == ("unspecified", 40)


def test_trained_subcortical_model_exports_a_release_that_converts_back_to_its_space(tmp_path, grid):
    subcortical_release(tmp_path / "rel", grid.n_voxels)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    encoder, meta = load_encoder(tmp_path / "ckpt")
    # As nforge train writes it: no original TRIBE config to copy, the space only in the metadata.
    save_encoder(encoder, tmp_path / "trained", metadata={"output_space": meta["output_space"]})
    export_tribev2(tmp_path / "trained", tmp_path / "back")
    doc = yaml.safe_load((tmp_path / "back" / "config.yaml").read_text())
    assert doc["data"]["neuro"]["projection"] == {"name": "MaskProjector", "mask": "subcortical", "resolution": 2}
    convert_tribev2(tmp_path / "back", tmp_path / "again")
    assert NForgeModel.from_pretrained(tmp_path / "again").output_space.key() == subcortical_space(grid).key()


def test_recorded_space_must_match_the_head(tmp_path):
    make_release(tmp_path / "rel", n_outputs=40, **TINY)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    encoder, _ = load_encoder(tmp_path / "ckpt")
    save_encoder(encoder, tmp_path / "bad", metadata={"output_space": fsaverage5_space().to_dict()})
    with pytest.raises(CheckpointError, match="config.json.*output_space.*fsaverage5.*40 columns"):
        NForgeModel.from_pretrained(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="output_space"):
        export_tribev2(tmp_path / "bad", tmp_path / "back")
    assert not (tmp_path / "back").exists()
    np.testing.assert_equal(NForgeModel(encoder).output_space.n_outputs, 40)
