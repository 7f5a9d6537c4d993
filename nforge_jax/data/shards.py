"""Splitting a store's timelines over independent processes (``--shard I/N``, or SLURM's task variables).

Process I of N takes every N-th timeline from the I-th, in the order given; the processes share nothing
but the output directory, each timeline is written atomically by exactly one of them, and a rerun of any
process skips what is done. No coordination is needed, so one process finishing early never blocks the
others (as a jax.distributed exit barrier would).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

__all__ = ["parse_shard", "check_shard", "shard_names"]


def check_shard(shard, option: str = "shard") -> tuple[int, int] | None:
    """None or (I, N) with 0 <= I < N; ValueError naming ``option`` otherwise."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise ValueError(f"{option}: expected (I, N) such as (0, 4), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"{option}: expected 0 <= I < N, got {i}/{n}")
    return i, n


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """"I/N" -> (I, N); None -> SLURM_PROCID/SLURM_NTASKS when SLURM runs several tasks, else None."""
    environ = os.environ if environ is None else environ
    if text is None:
        return _slurm_shard(environ)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected I/N such as 0/4, got {text!r}") from None
    return check_shard((i, n), "--shard")


def _slurm_shard(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(SLURM_PROCID, SLURM_NTASKS) when SLURM runs several tasks; a ValueError naming the variable when one is
    missing or not a number (a task launched without srun, or a variable exported by hand)."""
    ntasks = environ.get("SLURM_NTASKS")
    if ntasks is None:
        return None
    if not ntasks.strip().isdigit():
        raise ValueError(f"SLURM_NTASKS: expected a number of tasks, got {ntasks!r}")
    if int(ntasks) <= 1:
        return None
    procid = environ.get("SLURM_PROCID")
    if procid is None or not procid.strip().isdigit():
        raise ValueError(f"SLURM_PROCID: SLURM_NTASKS is {ntasks} but SLURM_PROCID is {procid!r}, expected this "
                         "task's index; start the tasks with srun, or pass --shard I/N")
    return check_shard((procid, ntasks), "SLURM_PROCID/SLURM_NTASKS")


def shard_names(names: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """This process's timelines: every N-th from the I-th (all of them without a shard)."""
    names = list(names)
    if shard is None:
        return names
    i, n = check_shard(shard)
    return names[i::n]
