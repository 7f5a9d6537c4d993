"""The offline demo: a small encoder trained on the synthetic planted-ground-truth store.

Command:   nforge demo            (or: nforge train --config configs/demo.py --config.data.store=STORE)
Runtime:   about 5 minutes on a 2-core CPU.
Expected:  median over cortical vertices of r / noise ceiling >= 0.8 on held-out stimuli.
"""

from nforge_jax.train.config import default_config


def get_config(arg=None):
    c = default_config()
    c.seed = 0
    c.data.batch_size = 8
    c.data.split_attributes = {"Synthetic": "stimulus"}  # hold out whole stimuli
    c.data.val_ratio = 0.2
    c.data.weigh_by = "none"
    c.model.hidden = 96
    c.model.depth = 2
    c.model.heads = 3
    c.model.low_rank_head = 32
    c.model.modality_dropout = 0.0
    c.optim.lr = 1e-2
    c.train.epochs = 40
    c.train.log_every = 5
    c.train.tb_images = False
    return c
