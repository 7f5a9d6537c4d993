"""The full TRIBE v2 recipe on the four studies (Algonauts2025, Wen2017, Lahner2024, Lebel2023).

Command:   nforge train --config configs/cortical.py --config.data.store=STORE --workdir runs/cortical
           (multi-GPU / SLURM: see BUILD.md, "Training on a cluster")
           Variants: configs/cortical.py:bf16 (bfloat16 compute), configs/cortical.py:sharded (head over 8 devices).
Runtime:   15 epochs; on one H100 roughly a day for the ~450 h of fMRI (not measured here).
Expected:  validation Pearson comparable to TRIBE v2's published cortical encoding results.
"""

from nforge_jax.train.config import default_config


def get_config(arg=None):
    c = default_config()  # hidden 1152, 8 layers, low rank 2048, Adam 1e-4 one-cycle, 15 epochs, batch 8
    c.data.worker_count = 8
    if arg == "bf16":
        c.model.dtype = "bfloat16"
    elif arg == "sharded":
        c.model.dtype = "bfloat16"
        c.train.mesh_model = 8
    return c
