"""Multi-process (multi-host / multi-GPU) start-up with `jax.distributed`.

Three ways, checked in this order:
- explicit: NFORGE_COORDINATOR=host:port, NFORGE_NUM_PROCESSES, NFORGE_PROCESS_ID (e.g. for localhost tests);
- SLURM: one task per GPU (`srun --ntasks-per-node=<gpus>`); JAX reads the coordinator from SLURM's variables;
- otherwise a single process, nothing to do.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize_distributed() -> bool:
    """Initialises jax.distributed when the environment asks for several processes; True if it did."""
    if os.environ.get("NFORGE_COORDINATOR"):
        try:
            n, pid = int(os.environ["NFORGE_NUM_PROCESSES"]), int(os.environ["NFORGE_PROCESS_ID"])
        except (KeyError, ValueError):
            raise ValueError("NFORGE_COORDINATOR is set: NFORGE_NUM_PROCESSES and NFORGE_PROCESS_ID must be integers") from None
        jax.distributed.initialize(coordinator_address=os.environ["NFORGE_COORDINATOR"], num_processes=n,
                                   process_id=pid, initialization_timeout=120)
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()  # SLURM cluster detection: coordinator = first node, ids from SLURM_PROCID
        return True
    return False
