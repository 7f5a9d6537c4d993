"""README.md's Python snippets run as written, in order, on a tiny model and data made here.

The snippets name their inputs (`text_feats`, `feats`, `raw_fmri`, ...) and say their shapes; this test
provides them at those shapes. The one block that needs downloaded extractor models is tagged
`python needs-extractor-models` in the README and is the only one not run.
"""

import re
from pathlib import Path

import numpy as np
from flax import nnx

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    blocks = FENCE.findall(README.read_text())
    assert len(blocks) >= 3
    assert [tag.strip() for tag, _ in blocks if tag.strip()] == ["needs-extractor-models"]
    # The released layout (feature dims, 20,484 vertices, 100 s windows) at a tiny width.
    config = EncoderConfig(feature_dims=(("text", 2, 3072), ("audio", 2, 1024), ("video", 2, 1408)),
                           n_outputs=20484, n_output_timesteps=100, hidden=96, depth=1, heads=3, low_rank_head=8,
                           n_subjects=2)
    monkeypatch.chdir(tmp_path)
    NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(0)), device="cpu").save("ckpt")
    _store_and_predictions(tmp_path)
    rng = np.random.default_rng(0)
    steps = 200  # 100 s at 2 Hz
    inputs = {f"{m}_feats": rng.standard_normal((steps, n, d)).astype(np.float32) for m, n, d in config.feature_dims}
    namespace = {**inputs, "feats": {m: inputs[f"{m}_feats"] for m in ("text", "audio", "video")},
                 "raw_fmri": rng.standard_normal((steps // 2 + 5, 20484)).astype(np.float32)}
    for tag, code in blocks:
        if not tag.strip():
            exec(compile(code, f"README.md block {code.splitlines()[0]!r}", "exec"), namespace)
    assert namespace["preds"].shape == (100, 20484)
    assert namespace["new_id"] == 2 and namespace["model"].metadata["adapted_subjects"][-1]["name"] == "sub-new"
    assert set(namespace["profiles"]) == {"V1", "A1"} and namespace["scores"]["text"].shape == (20484,)
    assert namespace["pred"].shape == (20484,)


def _store_and_predictions(where):
    """`STORE` (a synthetic store with fMRI: one stimulus shown twice) and `preds/` (nforge predict's output on it),
    the inputs the evaluate snippet names."""
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.data.synthetic import DEFAULT_FEATURE_DIMS, make_synthetic_store
    from nforge_jax.inference.batch import predict_store
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    make_synthetic_store(where / "STORE", n_subjects=1, n_timelines=1, duration_s=60, repeats=2, seed=0)
    dims = tuple((m, *DEFAULT_FEATURE_DIMS[m]) for m in ("text", "audio", "video"))
    config = EncoderConfig(feature_dims=dims, n_outputs=20484, n_output_timesteps=20, hidden=48, depth=1, heads=1,
                           low_rank_head=8, n_subjects=1)
    model = NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(1)), device="cpu")
    predict_store(model, FeatureStore.open(where / "STORE"), where / "preds", progress=False)


def test_readme_in_silico_experiment_file_is_the_one_the_example_writes():
    # the README shows the experiment file tools/contrast_example.py writes: the two must not drift apart
    import importlib.util

    tool = README.parent / "tools" / "contrast_example.py"
    spec = importlib.util.spec_from_file_location("contrast_example", tool)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    section = README.read_text().split("## In-silico experiments", 1)[1]
    shown = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    written = "".join(line + "\n" for line in example.EXPERIMENT.splitlines() if not line.startswith("#"))
    assert shown == written
