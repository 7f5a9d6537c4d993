"""The offline demo: a small encoder trained on the synthetic planted-ground-truth store.

Command:   nforge demo --out DIR
           (or, on a store you made: nforge train --config configs/demo.py --config.data.store=STORE --workdir W)
Runtime:   about 6 minutes on a 2-core CPU (stores ~1 min, training ~3 min, evaluate / variance shares /
           adaptation / figures ~2 min).
Expected:  on the test stimuli (nforge demo sets data.test_values to stim-13, stim-14: in neither training nor
           validation), median over cortical vertices of r / noise ceiling (ceiling from the repeats) >= 0.8;
           see DIR/summary.json.
"""

from nforge_jax.demo import demo_config


def get_config(arg=None):
    return demo_config()
