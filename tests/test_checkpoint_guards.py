"""Malformed releases and checkpoints are refused in one line naming the file and the field; writes that fail
(disk full) end in one line with nothing left behind; work directories of killed writers are cleaned up;
output directories follow the umask; a hub id offline fails at once."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from flax import nnx

from helpers import make_release
from nforge_jax import NForgeModel
from nforge_jax.cli import main as cli_main
from nforge_jax.convert.tribev2 import convert_tribev2, export_tribev2
from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.checkpoint import CheckpointError, load_encoder, save_encoder

CONFIG = EncoderConfig(feature_dims=(("text", 2, 16),), n_outputs=30, n_output_timesteps=10, hidden=64, depth=1,
                       heads=2, low_rank_head=16, n_subjects=2)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    make_release(root / "rel")
    return root / "rel"


def _copy_release(release, tmp_path, edit_ckpt=None, edit_yaml=None):
    dst = tmp_path / "rel"
    dst.mkdir()
    text = (release / "config.yaml").read_text()
    (dst / "config.yaml").write_text(edit_yaml(text) if edit_yaml else text)
    ckpt = torch.load(release / "best.ckpt", weights_only=True)
    if edit_ckpt:
        edit_ckpt(ckpt)
    torch.save(ckpt, dst / "best.ckpt")
    return dst


def _refused(src, tmp_path, *needles):
    with pytest.raises(CheckpointError) as err:
        convert_tribev2(src, tmp_path / "out")
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not (tmp_path / "out").exists() and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


# 5. NaN weights -------------------------------------------------------------------------------------------------
def test_release_with_nan_weights_is_refused(release, tmp_path):
    def poison(ckpt):
        ckpt["state_dict"]["model.encoder.layers.0.1.to_q.weight"][3, 5] = float("nan")

    _refused(_copy_release(release, tmp_path, poison), tmp_path, "best.ckpt",
             "'model.encoder.layers.0.1.to_q.weight'", "nan", "expected finite weights")


# 8. malformed files ----------------------------------------------------------------------------------------------
def test_state_dict_that_is_a_list(release, tmp_path):
    def listify(ckpt):
        ckpt["state_dict"] = list(ckpt["state_dict"].values())

    _refused(_copy_release(release, tmp_path, listify), tmp_path, "best.ckpt", "'state_dict' is a list",
             "expected a mapping")


def test_python_tag_on_a_numeric_yaml_field(release, tmp_path):
    src = _copy_release(release, tmp_path, edit_yaml=lambda t: t.replace(
        "hidden: 96", "hidden: !!python/object/apply:numpy.int64 [96]"))
    _refused(src, tmp_path, "config.yaml brain_model_config.hidden is [96], expected an integer")


def test_depth_two_as_a_word(release, tmp_path):
    doc = yaml.unsafe_load((release / "config.yaml").read_text())
    doc["brain_model_config"]["encoder"]["depth"] = "two"
    src = _copy_release(release, tmp_path, edit_yaml=lambda t: yaml.dump(doc))
    _refused(src, tmp_path, "brain_model_config.encoder.depth is 'two', expected an integer")
    # the same in an nforge_jax checkpoint's config.json
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), tmp_path / "ckpt")
    cfg = tmp_path / "ckpt" / "config.json"
    doc = json.loads(cfg.read_text())
    doc["model"]["depth"] = "two"
    cfg.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"config.json field 'model': depth: expected a positive integer, got 'two'"):
        load_encoder(tmp_path / "ckpt")


def test_config_json_that_is_a_list(tmp_path, capsys):
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("[1, 2]")
    assert cli_main(["convert", "to-tribev2", str(tmp_path / "ckpt"), str(tmp_path / "back")]) == 2
    err = capsys.readouterr().err
    assert "config.json: holds a list, expected a JSON object" in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err


def test_zero_byte_and_old_format_best_ckpt(release, tmp_path):
    src = _copy_release(release, tmp_path)
    (src / "best.ckpt").write_bytes(b"")
    _refused(src, tmp_path, "best.ckpt: empty file (0 bytes); expected a PyTorch checkpoint")
    # the legacy (pre-zip) torch.save format cannot be memory-mapped, but it is read
    torch.save(torch.load(release / "best.ckpt", weights_only=True), src / "best.ckpt",
               _use_new_zipfile_serialization=False)
    convert_tribev2(src, tmp_path / "legacy")
    (src / "best.ckpt").write_bytes(b"not a checkpoint at all")
    _refused(src, tmp_path, "best.ckpt: cannot be read safely", "expected a PyTorch checkpoint")


# 9. disk full, leftovers, umask ------------------------------------------------------------------------------------
def test_disk_full_during_convert_is_one_line_and_leaves_nothing(release, tmp_path, monkeypatch, capfd):
    from orbax.checkpoint._src.serialization import type_handlers

    async def full(self, value, tspec, ts_context):  # what tensorstore raises when the disk is full
        raise ValueError(f"RESOURCE_EXHAUSTED: Error writing local file \"{tspec}\": Failed to write "
                         f"{value.nbytes} bytes to file 4: No space left on device [os_error_code='28']")

    monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", full)
    capfd.readouterr()
    assert cli_main(["convert", "tribev2", str(release), str(tmp_path / "out")]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) <= 2 and "Traceback" not in "\n".join(err), "\n".join(err[:40])
    assert "no space left on device (ENOSPC)" in err[0] and str(tmp_path / "out") in err[0]
    assert os.listdir(tmp_path) == []


def test_disk_too_small_is_refused_before_writing(release, tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(CheckpointError, match=r"out: no space left on device \(ENOSPC\).*MiB needed"):
        convert_tribev2(release, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_leftovers_of_killed_writers_are_removed(release, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().split(".")[0].replace("-", "_")
    killed = tmp_path / f".out.tmp-{host}-{dead.pid}-abcd1234"
    ancient = tmp_path / ".out.tmp-k2x9_q1z"  # an older naming, two days old
    alive = tmp_path / f".out.tmp-{host}-{os.getpid()}-0000ffff"  # a writer still running: kept
    for d in (killed, ancient, alive):
        (d / "params").mkdir(parents=True)
    os.utime(ancient, (time.time() - 2 * 86400,) * 2)
    convert_tribev2(release, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "out"])


def test_output_directories_follow_the_umask(release, tmp_path):
    old = os.umask(0o022)
    try:
        convert_tribev2(release, tmp_path / "ckpt")
        export_tribev2(tmp_path / "ckpt", tmp_path / "back")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "back").stat().st_mode & 0o777 == 0o755


# 10. hub id offline ------------------------------------------------------------------------------------------------
def test_hub_id_offline_fails_at_once(tmp_path, monkeypatch, capfd):
    from huggingface_hub import constants

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there: connection refused, as without a network
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.time()
    with pytest.raises(CheckpointError) as err:
        NForgeModel.from_pretrained("facebook/tribev2", cache_folder=tmp_path / "cache")
    assert time.time() - t0 < 5
    msg = str(err.value)
    assert "offline" in msg and "./tribev2/config.yaml" in msg and "./tribev2/best.ckpt" in msg
    assert "Retrying" not in capfd.readouterr().err
