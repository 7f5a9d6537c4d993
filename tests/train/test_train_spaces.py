"""Training and output spaces: the exported model records the store's space; a store whose timelines mix
spaces, or a workdir whose run was trained on another space, is refused naming both."""

import json

import numpy as np
import pytest

from nforge_jax.data.spaces import OutputSpace
from nforge_jax.inference.model import NForgeModel
from nforge_jax.train.loop import BEST_MODEL, FINAL_MODEL, TrainError, train
from train_helpers import N_VERTICES, make_tiny_store, tiny_config


def fake_subcortical(digest: str) -> OutputSpace:
    """A subcortical space of N_VERTICES voxels on a made-up grid (two differ only in their voxels)."""
    grid = {"shape": [4, 4, 4], "affine": np.eye(4).tolist(), "voxels_sha256": digest * 64, "exact": False,
            "source": "test"}
    return OutputSpace("subcortical", N_VERTICES, grid)


def quiet(*_):
    pass


def test_export_records_the_space_and_a_resumed_run_must_keep_it(tmp_path):
    make_tiny_store(tmp_path / "a", n_stimuli=2, n_subjects=1, space=fake_subcortical("a"))
    cfg = tiny_config(tmp_path / "a", epochs=1, mesh_data=1)
    cfg.data.val_values = ("s1",)
    train(cfg, tmp_path / "run", progress=False, log=quiet)
    for export in (BEST_MODEL, FINAL_MODEL):
        assert NForgeModel.from_pretrained(tmp_path / "run" / export).output_space == fake_subcortical("a")
    # The same run continued on a store of another grid (same voxel count): refused, naming both.
    make_tiny_store(tmp_path / "b", n_stimuli=2, n_subjects=1, space=fake_subcortical("b"))
    cfg.data.store = str(tmp_path / "b")
    cfg.train.epochs = 2
    with pytest.raises(TrainError, match=r"store .*b is subcortical .* but the run in .*run is subcortical .*other "
                                         r"voxels.*use a new --workdir") as err:
        train(cfg, tmp_path / "run", progress=False, log=quiet)
    assert "\n" not in str(err.value)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] > 0  # the first run's outputs are untouched


def test_a_store_mixing_spaces_is_refused(tmp_path):
    store = make_tiny_store(tmp_path / "s", n_stimuli=2, n_subjects=1, space=fake_subcortical("a"))
    name = store.timelines[0]
    store.write_timeline("Tiny:stimulus=s9,subject=p0", features={m: store.features(name, m) for m in ("text", "audio")},
                         fmri=store.fmri(name), meta={**store.meta(name), "stimulus": "s9",
                                                     "space": fake_subcortical("b").to_dict()})
    with pytest.raises(TrainError, match=r"mixes output spaces: timeline 'Tiny:stimulus=s9,subject=p0' is "
                                         r"subcortical .* but timeline .* is subcortical"):
        cfg = tiny_config(tmp_path / "s", epochs=1, mesh_data=1)
        cfg.data.val_values = ("s1",)
        train(cfg, tmp_path / "run", progress=False, log=quiet)
    assert not (tmp_path / "run" / BEST_MODEL).exists()


def test_subcortical_config_variants_are_valid(tmp_path):
    import importlib.util
    from pathlib import Path

    from nforge_jax.train.config import check_config

    path = Path(__file__).parents[2] / "configs" / "subcortical.py"
    spec = importlib.util.spec_from_file_location("subcortical_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in (None, "bf16", "small"):
        cfg = module.get_config(arg)
        cfg.data.store = str(tmp_path)
        check_config(cfg)
        assert cfg.train.tb_images is False
    assert module.get_config("small").model.depth == 1
    with pytest.raises(ValueError, match="unknown variant"):
        module.get_config("nope")
