"""A quick local check of the full training path: 3 epochs on 3 timelines.

Store:     python -c "from nforge_jax.data.synthetic import make_synthetic_store as m; m('stores/test', n_subjects=1, n_timelines=3)"
Command:   nforge train --config configs/test_run.py --config.data.store=stores/test --workdir runs/test
Runtime:   about 30 s on a 2-core CPU (3 steps: 2 training timelines of 300 s, 1 for validation).
Expected:  finishes, writes checkpoints, best_model/ and train_summary.json. It checks the path, not the
           quality: 3 steps learn nothing measurable, validation Pearson is about 0 (measured 0.0001;
           0.0002 after 40 epochs). configs/demo.py is the one that learns (median r / noise ceiling 0.94).
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
