"""The offline demo: a small encoder trained on the synthetic planted-ground-truth store.

Command:   nforge demo --out DIR
           (or, on a store you made: nforge train --config configs/demo.py --config.data.store=STORE --workdir W)
Runtime:   about 5 minutes on a 2-core CPU (store ~40 s, training ~3 min, scoring/attribution/figures ~1 min).
Expected:  median over cortical vertices of (held-out r / noise ceiling) >= 0.8; see DIR/summary.json.
"""

from nforge_jax.demo import demo_config


def get_config(arg=None):
    return demo_config()
