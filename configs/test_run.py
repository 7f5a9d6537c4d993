"""A quick local check of the full training path: 3 epochs on 3 timelines.

Command:   nforge train --config configs/test_run.py --config.data.store=STORE --workdir runs/test
Runtime:   under a minute on a 2-core CPU for a small synthetic store.
Expected:  finishes, writes checkpoints, best_model/ and train_summary.json; validation Pearson > 0.
"""

from nforge_jax.train.config import default_config


def get_config(arg=None):
    c = default_config()
    c.data.batch_size = 2
    c.data.val_ratio = 0.34
    c.data.weigh_by = "none"
    c.model.hidden = 96
    c.model.depth = 1
    c.model.heads = 3
    c.model.low_rank_head = 16
    c.optim.lr = 1e-3
    c.train.epochs = 3
    c.train.log_every = 1
    c.train.tb_images = False
    return c
