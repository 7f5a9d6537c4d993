"""The command line as a user runs it: a real subprocess, its output and its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "nforge_jax.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_import_does_not_import_torch(tmp_path):
    code = "import sys, nforge_jax; from nforge_jax import NForgeModel; import nforge_jax.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def assert_user_error(proc, *expected):
    """A user error: non-zero exit, at most two lines on stderr (the error and the --debug hint), no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, proc.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_user_error_is_one_line(tmp_path):
    proc = run("convert", "tribev2", str(tmp_path / "missing"), str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert_user_error(proc, "missing")
    debug = run("--debug", "convert", "tribev2", str(tmp_path / "missing"), str(tmp_path / "out"), cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    debug = run("convert", "tribev2", str(tmp_path / "missing"), str(tmp_path / "out"), "--debug", cwd=tmp_path)
    assert "Traceback" in debug.stderr


TEST_RUN = str(Path(__file__).parents[1] / "configs" / "test_run.py")


def bad_inputs(tmp):
    """(argv, text the error line must hold) per subcommand: a representative mistake each."""
    (tmp / "a_file").write_text("not a directory")
    missing = str(tmp / "missing")
    return {
        "demo": (["demo", "--out", str(tmp / "a_file" / "demo"), "--epochs", "1"], "a_file"),
        "convert": (["convert", "tribev2", missing, str(tmp / "out")], "missing"),
        "train typo": (["train", "--config", TEST_RUN, "--config.data.stroe=x", "--workdir", str(tmp / "w")],
                       "there is no field data.stroe; did you mean data.store?"),
        "train unknown": (["train", "--config", TEST_RUN, "--config.nope=1", "--workdir", str(tmp / "w")],
                          "there is no field nope; the fields of the config are"),
        "train epochs": (["train", "--config", TEST_RUN, "--config.train.epochs=0", "--config.data.store=" + missing,
                          "--workdir", str(tmp / "w")], "train.epochs = 0: expected an integer >= 1"),
        "store info": (["store", "info", missing], "missing"),
        "store verify": (["store", "verify", missing], "missing"),
        "study": (["study", "build", "Nope", "--root", missing, "--store", str(tmp / "s")], "Nope"),
        "adapt": (["adapt", missing, "--store", missing, "--timelines", "t", "--out", str(tmp / "o")], "missing"),
        "extract": (["extract", "--events", missing + ".tsv", "--store", str(tmp / "s")], "missing.tsv"),
        "predict": (["predict", "--store", missing, "--checkpoint", missing, "--out", str(tmp / "o")], "missing"),
        "evaluate": (["evaluate", missing, "--store", missing], "missing"),
        "view": (["view", missing, "--out", str(tmp / "v.html")], "missing"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/tmp"))))
def test_every_subcommand_reports_a_user_error_in_one_line(tmp_path, case):
    argv, expected = bad_inputs(tmp_path)[case]
    line = assert_user_error(run(*argv, cwd=tmp_path), expected)
    assert "\\" not in line and "overwrite=True" not in line


# Runs the CLI with every write below TARGET failing as a read-only, full or forbidden file system would
# (tests run as root, which permissions do not stop): mkdir, open or os.open for writing, rename into it.
FAULTY_DISK = """
import builtins, errno, io, os, sys
target, code = os.path.abspath(sys.argv[1]), getattr(errno, sys.argv[2])
def under(p):
    try:
        return os.path.abspath(os.fsdecode(p)).startswith(target)
    except TypeError:
        return False
def fail(p):
    raise OSError(code, os.strerror(code), os.fsdecode(p))
real_mkdir, real_open, real_os_open, real_replace = os.mkdir, io.open, os.open, os.replace
def mkdir(p, *a, **k):
    if under(p): fail(p)
    return real_mkdir(p, *a, **k)
def replace(a, b, *args, **k):
    if under(b): fail(b)
    return real_replace(a, b, *args, **k)
def open_(p, mode="r", *a, **k):
    if not isinstance(p, int) and under(p) and any(c in mode for c in "wax+"): fail(p)
    return real_open(p, mode, *a, **k)
def os_open(p, flags, *a, **k):
    if under(p) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT): fail(p)
    return real_os_open(p, flags, *a, **k)
os.mkdir, io.open, builtins.open, os.open, os.replace, os.rename = mkdir, open_, open_, os_open, replace, replace
from nforge_jax.cli import main
sys.exit(main(sys.argv[3:]))
"""


def run_on_faulty_disk(target, errno_name, *args, cwd):
    return subprocess.run([sys.executable, "-c", FAULTY_DISK, str(target), errno_name, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_model_and_store(tmp_path_factory):
    """A small saved model and a store with one timeline it can read (features + fMRI)."""
    import numpy as np
    from flax import nnx

    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    tmp = tmp_path_factory.mktemp("tiny")
    config = EncoderConfig(feature_dims=(("text", 1, 8),), n_outputs=30, n_output_timesteps=5, hidden=64, depth=1,
                           heads=2, low_rank_head=8, n_subjects=2)
    model = NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(0)), device="cpu", metadata={"subjects": ["p0", "p1"]})
    model.save(tmp / "ckpt")
    rng = np.random.default_rng(0)
    store = FeatureStore.create(tmp / "store")
    store.write_timeline("New:run=0", features={"text": rng.standard_normal((80, 1, 8)).astype(np.float32)},
                         fmri=rng.standard_normal((45, 30)).astype(np.float32),
                         meta={"study": "New", "subject": "s1", "tr_s": 1.0})
    return tmp / "ckpt", tmp / "store"


@pytest.mark.parametrize("errno_name, command", [("EACCES", "train"), ("EROFS", "adapt"), ("ENOSPC", "predict")])
def test_os_errors_are_one_line_naming_the_path(tmp_path, tiny_model_and_store, errno_name, command):
    ckpt, store = tiny_model_and_store
    faulty = tmp_path / "faulty"  # the disk that fails; the command writes into a new directory on it
    faulty.mkdir()
    target = faulty / "target"
    argv = {"train": ["train", "--config", TEST_RUN, f"--config.data.store={store}", "--workdir", str(target)],
            "adapt": ["adapt", str(ckpt), "--store", str(store), "--timelines", "New:run=0", "--out", str(target),
                      "--regularization", "1.0"],
            "predict": ["predict", "--store", str(store), "--checkpoint", str(ckpt), "--out", str(target),
                        "--no-progress"]}[command]
    proc = run_on_faulty_disk(faulty, errno_name, *argv, cwd=tmp_path)
    import errno

    line = assert_user_error(proc, str(faulty), os.strerror(getattr(errno, errno_name)))
    assert line.startswith(f"nforge {command}: error: ")
    assert list(faulty.iterdir()) == []  # nothing partial, no temporary leftovers


def test_adapt_name(tmp_path, tiny_model_and_store):
    ckpt, store = tiny_model_and_store
    argv = ["adapt", str(ckpt), "--store", str(store), "--timelines", "New:run=0", "--regularization", "1.0"]
    for bad, why in (("p1", "already has a subject named 'p1'"), ("", "expected a non-empty subject name"),
                     ("7", "is a number")):
        assert_user_error(run(*argv, "--out", str(tmp_path / "bad"), "--name", bad, cwd=tmp_path), why)
        assert not (tmp_path / "bad").exists()
    proc = run(*argv, "--out", str(tmp_path / "out"), "--name", "sub-07", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "new subject 'sub-07' (id 2)" in proc.stdout
    doc = json.loads((tmp_path / "out" / "config.json").read_text())
    assert doc["metadata"]["subjects"] == ["p0", "p1", "sub-07"]
    assert doc["metadata"]["adapted_subjects"][-1]["name"] == "sub-07"
    # The new name is a name the model now has: adapting again under it is refused.
    again = run("adapt", str(tmp_path / "out"), *argv[2:], "--out", str(tmp_path / "again"), "--name", "sub-07",
                cwd=tmp_path)
    assert_user_error(again, "already has a subject named 'sub-07'")


def test_messages_name_the_cli_flag_not_the_keyword(tmp_path, tiny_model_and_store):
    ckpt, store = tiny_model_and_store
    (tmp_path / "out").mkdir()
    proc = run("adapt", str(ckpt), "--store", str(store), "--timelines", "New:run=0", "--out", str(tmp_path / "out"),
               cwd=tmp_path)
    assert_user_error(proc, "pass --overwrite to replace it")
    proc = run("adapt", str(ckpt), "--store", str(store), "--timelines", "New:run=0", "--out", str(tmp_path / "cv"),
               "--cv", "1", cwd=tmp_path)
    assert_user_error(proc, "--cv: expected an integer number of folds >= 2, got 1")
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("argv, expected", [
    (["adapt", "m", "--store", "s", "--timelines", "t", "--out", "o", "--regularization", "abc"],
     "argument --regularization: expected 'cv' or a number >= 0, got 'abc'"),
    (["adapt", "m", "--store", "s", "--timelines", "t", "--out", "o", "--regularization", "-1"],
     "argument --regularization: expected 'cv' or a number >= 0, got '-1'"),
    (["extract", "--events", "e.tsv", "--store", "s", "--text-layers", "0.5,,1"],
     "argument --text-layers: '0.5,,1': expected comma-separated numbers"),
])
def test_flag_values_are_checked_before_anything_runs(capsys, argv, expected):
    from nforge_jax.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


HELP_IMPORTS = """
import runpy, sys
sys.argv = ["nforge"] + sys.argv[1:]
try:
    runpy.run_module("nforge_jax.cli", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("jax", "torch", "numpy", "flax", "orbax", "transformers") if m in sys.modules)
print("HEAVY:", ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [[], ["train"], ["extract"], ["predict"], ["adapt"], ["store", "info"]])
def test_help_imports_nothing_heavy(tmp_path, command):
    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS, *command, "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "usage: nforge" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY:", proc.stderr[-2000:]


def test_extract_option_defaults_match_the_library():
    from nforge_jax.cli import EXTRACT_BATCH_SIZES, EXTRACT_DEFAULTS
    from nforge_jax.extract.recipe import ExtractConfig

    d = ExtractConfig()
    assert EXTRACT_DEFAULTS == {m: (getattr(d, m).model_id, getattr(d, m).layers, getattr(d, m).aggregation)
                                for m in d.modalities}
    assert EXTRACT_BATCH_SIZES == {m: getattr(d, m).batch_size for m in d.modalities}



def test_bench_hands_its_arguments_to_tools_bench(capsys):
    from nforge_jax.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0 and "forward,train,loader" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # tools/bench.py itself refuses the size
        main(["bench", "ridge", "--size", "huge"])
    assert exit_.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_train_refuses_a_store_mixing_output_spaces_in_one_line(tmp_path):
    import numpy as np

    from nforge_jax.data.spaces import OutputSpace
    from nforge_jax.data.store import FeatureStore

    store = FeatureStore.create(tmp_path / "store")
    rng = np.random.default_rng(0)
    for i, digest in enumerate("aaab"):  # three timelines on one grid, one on a grid of other voxels
        space = OutputSpace("subcortical", 30, {"shape": [4, 4, 4], "affine": np.eye(4).tolist(),
                                                "voxels_sha256": digest * 64})
        store.write_timeline(f"S:stim=s{i}", features={"text": rng.standard_normal((80, 1, 8)).astype(np.float32)},
                             fmri=rng.standard_normal((40, 30)).astype(np.float32),
                             meta={"study": "S", "subject": "p0", "stim": f"s{i}", "space": space.to_dict()})
    proc = run("train", "--config", TEST_RUN, f"--config.data.store={store.path}", "--workdir", str(tmp_path / "w"),
               cwd=tmp_path)
    line = assert_user_error(proc, "mixes output spaces", "S:stim=s3", "other voxels")
    assert line.startswith("nforge train: error: ")
    assert not (tmp_path / "w" / "best_model").exists()
