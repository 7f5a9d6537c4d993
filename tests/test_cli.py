"""The command line as a user runs it: a real subprocess, its output and its files."""

import json
import os
import subprocess
import sys


def run(*args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "nforge_jax.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_demo_runs_and_writes_summary(tmp_path):
    proc = run("demo", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n_vertices"] == 20484
    for path in summary["paths"].values():
        assert os.path.exists(path), path
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
