"""TRIBE v2 release <-> nforge_jax checkpoint: bit-exact round trip and clear refusals of bad input."""

import os

import numpy as np
import pytest
import torch
import yaml

from helpers import make_release
from nforge_jax.cli import main as cli_main
from nforge_jax.convert.tribev2 import convert_tribev2, export_tribev2
from nforge_jax.model.checkpoint import CheckpointError, load_encoder


def _leftovers(directory):
    return [p for p in os.listdir(directory) if ".tmp-" in p]


def test_round_trip_is_bit_exact(tmp_path):
    make_release(tmp_path / "rel", n_subjects=3)
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    export_tribev2(tmp_path / "ckpt", tmp_path / "back")
    a = torch.load(tmp_path / "rel" / "best.ckpt", weights_only=True)
    b = torch.load(tmp_path / "back" / "best.ckpt", weights_only=True)
    assert list(a["state_dict"]) == list(b["state_dict"])  # same keys, same order
    for key, value in a["state_dict"].items():
        assert b["state_dict"][key].dtype == value.dtype
        assert torch.equal(b["state_dict"][key], value), key
    assert {m: tuple(v) for m, v in b["model_build_args"]["feature_dims"].items()} == \
        {m: tuple(v) for m, v in a["model_build_args"]["feature_dims"].items()}
    assert (tmp_path / "back" / "config.yaml").read_text() == (tmp_path / "rel" / "config.yaml").read_text()
    # And the exported release converts again to the same arrays.
    convert_tribev2(tmp_path / "back", tmp_path / "ckpt2")
    m1, _ = load_encoder(tmp_path / "ckpt")
    m2, _ = load_encoder(tmp_path / "ckpt2")
    from nforge_jax.model.checkpoint import encoder_arrays
    x1, x2 = encoder_arrays(m1), encoder_arrays(m2)
    assert all(np.array_equal(x1[k], x2[k]) for k in x1)


def test_released_style_average_only_head(tmp_path):
    # Release: config says 25 training subjects, the checkpoint keeps only the shared row.
    ref = make_release(tmp_path / "rel", n_subjects=0)
    brain = yaml.unsafe_load((tmp_path / "rel" / "config.yaml").read_text())
    brain["brain_model_config"]["subject_layers"]["n_subjects"] = 25
    (tmp_path / "rel" / "config.yaml").write_text(yaml.dump(brain))
    convert_tribev2(tmp_path / "rel", tmp_path / "ckpt")
    model, _ = load_encoder(tmp_path / "ckpt")
    assert model.config.n_subjects == 0 and model.config.has_average_subject
    assert model.predictor.weights[...].shape[0] == ref.predictor.weights.shape[0] == 1


def _expect_error(tmp_path, src, *needles):
    with pytest.raises(CheckpointError) as err:
        convert_tribev2(src, tmp_path / "out")
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []
    return str(err.value)


def test_missing_files(tmp_path):
    make_release(tmp_path / "rel")
    os.remove(tmp_path / "rel" / "best.ckpt")
    _expect_error(tmp_path, tmp_path / "rel", "best.ckpt", "missing")
    _expect_error(tmp_path, tmp_path / "nowhere", "nowhere")


def test_truncated_checkpoint(tmp_path):
    make_release(tmp_path / "rel")
    path = tmp_path / "rel" / "best.ckpt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path, tmp_path / "rel", "best.ckpt", "cannot be read")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path):
    make_release(tmp_path / "rel")
    ckpt = torch.load(tmp_path / "rel" / "best.ckpt", weights_only=True)
    ckpt["callbacks"] = Payload()
    torch.save(ckpt, tmp_path / "rel" / "best.ckpt")
    msg = _expect_error(tmp_path, tmp_path / "rel", "best.ckpt")
    assert "refusing" in msg or "safely" in msg


def test_unexpected_and_missing_keys(tmp_path):
    make_release(tmp_path / "rel")
    path = tmp_path / "rel" / "best.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.extra.weight"] = torch.zeros(2)
    del ckpt["state_dict"]["model.encoder.final_norm.g"]
    torch.save(ckpt, path)
    _expect_error(tmp_path, tmp_path / "rel", "model.extra.weight", "model.encoder.final_norm.g")


def test_wrong_shape(tmp_path):
    make_release(tmp_path / "rel")
    path = tmp_path / "rel" / "best.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.projectors.audio.weight"] = torch.zeros(32, 7)
    torch.save(ckpt, path)
    _expect_error(tmp_path, tmp_path / "rel", "model.projectors.audio.weight", "shape")


def test_wrong_subject_rows(tmp_path):
    make_release(tmp_path / "rel", n_subjects=3)
    doc = yaml.unsafe_load((tmp_path / "rel" / "config.yaml").read_text())
    doc["brain_model_config"]["subject_layers"]["n_subjects"] = 5
    (tmp_path / "rel" / "config.yaml").write_text(yaml.dump(doc))
    _expect_error(tmp_path, tmp_path / "rel", "predictor.weights", "n_subjects")


@pytest.mark.parametrize("field,value", [("subject_embedding", True), ("linear_baseline", True),
                                         ("temporal_smoothing", {"kernel_size": 9})])
def test_unsupported_config_field(tmp_path, field, value):
    make_release(tmp_path / "rel")
    doc = yaml.unsafe_load((tmp_path / "rel" / "config.yaml").read_text())
    doc["brain_model_config"][field] = value
    (tmp_path / "rel" / "config.yaml").write_text(yaml.dump(doc))
    _expect_error(tmp_path, tmp_path / "rel", field, "not supported")


def test_unsupported_encoder_flag(tmp_path):
    make_release(tmp_path / "rel")
    doc = yaml.unsafe_load((tmp_path / "rel" / "config.yaml").read_text())
    doc["brain_model_config"]["encoder"]["use_rmsnorm"] = True
    (tmp_path / "rel" / "config.yaml").write_text(yaml.dump(doc))
    _expect_error(tmp_path, tmp_path / "rel", "encoder.use_rmsnorm", "config.yaml")


def test_yaml_with_python_object_tag_is_not_executed(tmp_path):
    make_release(tmp_path / "rel")
    text = (tmp_path / "rel" / "config.yaml").read_text()
    # An object tag must be read as plain data, never constructed.
    text += "evil: !!python/object/apply:os.system ['echo pwned > /dev/null']\n"
    (tmp_path / "rel" / "config.yaml").write_text(text)
    convert_tribev2(tmp_path / "rel", tmp_path / "out")  # converts; the tag is inert
    assert (tmp_path / "out" / "config.json").is_file()


def test_cli_convert_and_error_message(tmp_path, capsys):
    make_release(tmp_path / "rel")
    assert cli_main(["convert", "tribev2", str(tmp_path / "rel"), str(tmp_path / "ckpt")]) == 0
    assert cli_main(["convert", "to-tribev2", str(tmp_path / "ckpt"), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "best.ckpt").is_file()
    # Existing destination: one clear line, no traceback, nothing overwritten.
    assert cli_main(["convert", "tribev2", str(tmp_path / "rel"), str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
