"""TRIBE v2's recipe on a subcortical store: the head predicts the 2 mm Harvard-Oxford subcortical voxels.

Store:     nforge study build STUDY --root ROOT --store STORE --space subcortical   (Wen2017, Lahner2024, Lebel2023:
           the studies with MNI volumes; every timeline records the grid in meta["space"]). Training refuses a
           store whose timelines mix spaces, and the exported model records the store's space
           (metadata.output_space), so `nforge predict` / `nforge adapt` refuse a store of another space.
           The grid is FSL's file when NFORGE_HARVARD_OXFORD points at it (TRIBE v2's 8,802 voxels), else the
           offline rebuild (8,803): build the store and use the model with the same one.
Command:   nforge train --config configs/subcortical.py --config.data.store=STORE --workdir runs/subcortical
           Variants: configs/subcortical.py:bf16 (bfloat16 compute);
           configs/subcortical.py:small (hidden 96, one layer, 3 epochs: a local check of the whole path).
Runtime:   full recipe: as configs/cortical.py per hour of fMRI (the head is 2.3 x smaller); not measured here.
           :small on a 3-timeline store of 300 s runs (8,803 voxels, 9 steps): 370 s on a 2-core CPU that other
           jobs were loading (load average 12); mostly compilation and the three validations (BUILD.md).
Expected:  full recipe: validation Pearson over the subcortical voxels in train_summary.json (TRIBE v2 published
           no subcortical number to compare with). :small checks the path, not the quality: it finishes and
           writes best_model/ whose metadata.output_space is the store's grid.
"""

from nforge_jax.train.config import default_config


def get_config(arg=None):
    c = default_config()  # hidden 1152, 8 layers, low rank 2048, Adam 1e-4 one-cycle, 15 epochs, batch 8
    c.data.worker_count = 8
    c.train.tb_images = False  # the validation picture is drawn on the cortex
    if arg == "bf16":
        c.model.dtype = "bfloat16"
    elif arg == "small":
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
    elif arg is not None:
        raise ValueError(f"configs/subcortical.py:{arg}: unknown variant; expected bf16 or small")
    return c
