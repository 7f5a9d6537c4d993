"""Writes the README's in-silico example: feature stimuli cut from `nforge demo`'s synthetic store and an
experiment file contrasting them, for `nforge contrast`.

    nforge demo --out nforge_out/demo --duration 60
    python tools/contrast_example.py nforge_out/demo nforge_out/contrast_example
    nforge contrast nforge_out/contrast_example/experiment.yaml --checkpoint nforge_out/demo/train/best_model \\
        --out nforge_out/contrast_example/out

Each of the demo's stimuli gives two feature stimuli (.npz): its video features alone ("video") and its audio
features alone ("audio"; the model reads a missing modality as zeros). The experiment asks where the two
conditions differ in response strength (the temporal std of each prediction: the synthetic features are
zero-mean, so mean responses are near zero in both) -- the planted visual vs auditory territories of the
synthetic world -- for every training subject's head and the group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EXPERIMENT = """\
# In-silico experiment (nforge contrast): the demo's stimuli with one modality each
name: video_vs_audio
subject: all            # every training subject's head, and the group map of their mean
window: whole           # or {start: 5, end: 30}: seconds of response after onset (5 s hemodynamic offset)
response: std           # response strength over the window (default: mean response)
n_permutations: 1000
conditions:
  video: [stimuli/video/*.npz]
  audio: [stimuli/audio/*.npz]
contrasts:
  video_vs_audio: video - audio     # a difference: label permutation
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="the --out directory of nforge demo")
    parser.add_argument("out", type=Path, help="where the stimuli and experiment.yaml go")
    parser.add_argument("--seconds", type=float, default=60.0, help="stimulus length cut from each demo stimulus")
    args = parser.parse_args(argv)

    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.insilico.design import write_feature_stimulus

    model = NForgeModel.from_pretrained(args.demo / "train" / "best_model")
    store = FeatureStore.open(args.demo / "store")
    first = {}
    for name in store.timelines:  # one timeline per stimulus (every subject saw the same features)
        first.setdefault(store.meta(name).get("stimulus", name), name)
    rows = int(round(args.seconds * 2))
    for stimulus, name in sorted(first.items()):
        for modality in ("video", "audio"):
            feats = np.asarray(store.features(name, modality), np.float32)[:rows]
            write_feature_stimulus(args.out / "stimuli" / modality / f"{stimulus}.npz", {modality: feats}, model)
    (args.out / "experiment.yaml").write_text(EXPERIMENT)
    print(f"wrote {2 * len(first)} feature stimuli and {args.out / 'experiment.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
