"""A tiny learnable FeatureStore and config for training tests."""

import numpy as np

from nforge_jax.data.store import FeatureStore
from nforge_jax.train.config import default_config

N_VERTICES = 48


def make_tiny_store(path, *, n_subjects=2, n_stimuli=4, duration_s=60, seed=0, nan_in=None, space=None):
    """fMRI = a fixed linear map of 1 Hz-averaged features + noise, 5 s offset convention, z-scored; ``space``
    (an OutputSpace of N_VERTICES outputs) is recorded in every timeline's meta."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.create(path)
    w_text = rng.standard_normal((8, N_VERTICES))
    w_audio = rng.standard_normal((4, N_VERTICES))
    for stim in range(n_stimuli):
        t2 = int(duration_s * 2)
        text = rng.standard_normal((t2, 1, 8)).astype(np.float32)
        audio = rng.standard_normal((t2, 1, 4)).astype(np.float32)
        drive = text[:, 0].reshape(-1, 2, 8).mean(1) @ w_text + audio[:, 0].reshape(-1, 2, 4).mean(1) @ w_audio
        for subj in range(n_subjects):
            bold = np.zeros((duration_s, N_VERTICES), np.float32)
            bold[5:] = drive[:-5] * (1.0 + 0.2 * subj)  # response 5 s after the stimulus
            bold += 0.5 * rng.standard_normal(bold.shape).astype(np.float32)
            bold = (bold - bold.mean(0)) / bold.std(0)
            name = f"Tiny:stimulus=s{stim},subject=p{subj}"
            store.write_timeline(name, features={"text": text, "audio": audio},
                                 fmri=bold, meta={"study": "Tiny", "subject": f"p{subj}", "stimulus": f"s{stim}",
                                                  "tr_s": 1.0, "feature_hz": 2.0, "fmri_hz": 1.0, "offset_s": 5.0,
                                                  **({} if space is None else {"space": space.to_dict()})})
            if nan_in is not None and (stim, subj) == nan_in:
                # The store refuses non-finite data on write; this is damage after the fact (bad disk, a
                # tool that edited the file), which only the training loop can catch.
                path, offset, shape, dtype = store.array_file(name, "fmri")
                damaged = np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)
                damaged[10, 3] = np.nan
                damaged.flush()
                del damaged
    return store


def tiny_config(store_path, **train_overrides):
    c = default_config()
    c.seed = 1
    c.data.store = str(store_path)
    c.data.window_s = 20.0
    c.data.batch_size = 4
    c.data.val_values = ("s3",)
    c.data.split_attributes = {"Tiny": "stimulus"}
    c.data.weigh_by = "none"
    c.model.hidden = 64
    c.model.depth = 1
    c.model.heads = 2
    c.model.low_rank_head = 8
    c.model.modality_dropout = 0.2
    c.optim.lr = 2e-2
    c.train.epochs = 3
    c.train.log_every = 1
    c.train.tb_images = False
    c.train.compilation_cache = False
    for k, v in train_overrides.items():
        c.train[k] = v
    return c
