"""The command line as a user runs it: a real subprocess, its output and its files."""

import json
import os
import subprocess
import sys


def run(*args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "nforge_jax.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


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
                           "--epochs", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n_vertices"] == 20484
    for key in ("median_r", "median_r_over_ceiling", "seconds", "attribution_agreement"):
        assert isinstance(summary[key], float), key
    assert -1.0 <= summary["median_r"] <= 1.0
    for path in summary["paths"].values():
        assert os.path.exists(path), path
    with open(summary["paths"]["r_map"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert str(tmp_path / "demo") in proc.stdout


def test_import_does_not_import_torch(tmp_path):
    code = "import sys, nforge_jax; from nforge_jax import NForgeModel; import nforge_jax.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_user_error_is_one_line(tmp_path):
    proc = run("convert", "tribev2", str(tmp_path / "missing"), str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "missing" in proc.stderr and proc.stderr.strip().count("\n") == 0
