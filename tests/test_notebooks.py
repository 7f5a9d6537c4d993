"""The notebooks run top to bottom in a fresh kernel (this interpreter) and print the results they promise."""

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


class _ThisInterpreter(KernelSpecManager):
    """A "python3" kernel started with the interpreter running the tests (so the venv and PYTHONPATH apply)."""

    def get_kernel_spec(self, kernel_name):
        spec = super().get_kernel_spec(kernel_name)
        spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return spec


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One JAX compilation cache for the three notebooks' kernels: each trains the same small model on the same
    store shapes, so the second and third load the compiled steps the first one wrote (a cache hit runs the
    same program: the printed numbers are the same)."""
    return tmp_path_factory.mktemp("jax_compilation_cache")


def run_notebook(name, tmp_path, monkeypatch, compile_cache):
    monkeypatch.setenv("NFORGE_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(compile_cache))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device, as a user's laptop (the suite's conftest fakes 8)
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOKS.parent) + ":" + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # Committed without outputs, so a stale result can never pass for a fresh one.
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.kernel_manager_class.kernel_spec_manager_class = _ThisInterpreter
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "\n".join(out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
                     if out.get("output_type") == "stream")
    return text, tmp_path / "work"


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the notebook's output:\n{text}"
    return float(match.group(1))


def test_quickstart(tmp_path, monkeypatch, compile_cache):
    text, work = run_notebook("quickstart", tmp_path, monkeypatch, compile_cache)
    assert number(r"held-out median r over cortex: ([-\d.]+)", text) > 0.1
    assert re.search(r"-> prediction \(160, 20484\)", text), text
    assert (work / "r_map.png").stat().st_size > 10_000


def test_attribution_attention(tmp_path, monkeypatch, compile_cache):
    text, work = run_notebook("attribution_attention", tmp_path, monkeypatch, compile_cache)
    # Integrated gradients over all vertices at once: the modality scores add up (8 steps, small gap).
    assert number(r"completeness gap relative to the prediction change: ([-\d.e]+)", text) < 0.05
    shares = re.search(r"share of \|attribution\| in visual cortex: (\{.*\})", text).group(1)
    assert sum(json.loads(shares.replace("'", '"')).values()) == pytest.approx(1.0, abs=0.02)
    assert "dominant modality in visual cortex:" in text
    assert "'profiles', 'heatmap', 'surface left lateral', 'surface right lateral', 'colorbar'" in text
    assert (work / "roi_attention.png").stat().st_size > 10_000


def test_subject_adaptation(tmp_path, monkeypatch, compile_cache):
    text, work = run_notebook("subject_adaptation", tmp_path, monkeypatch, compile_cache)
    assert number(r"held-out median r: ridge adapter ([-\d.]+)", text) > 0.1
    assert "subject 0 unchanged: True" in text
    assert number(r"new subject id: (\d+)", text) == 1
    assert number(r"max \|difference\| ([-\d.e+]+)", text) < 1e-3
    doc = json.loads((work / "adapted_model" / "config.json").read_text())
    assert doc["model"]["n_subjects"] == 2
