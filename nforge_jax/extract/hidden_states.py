"""Choosing hidden states by depth and reducing tokens, as TRIBE v2's extractors do (neuralset 0.0.2,
TRIBEV2_SPEC D.2). With N hidden states (embedding output included):

1. ``cache_n_layers = K`` (optional): first keep only the K states ``round(linspace(0, N - 1, K))`` and
   work on that subset from here on (the release sets K = 20 for text and video; for Llama-3.2-3B's 29
   states the release's groups are therefore {13, 15, 16, 18, 19} and {21, 22, 24, 25, 27, 28});
2. a fraction f picks index ``int(f * (n - 1))`` of the (kept) n states;
3. aggregation:

- ``"cat"``: one hidden state per fraction, in the given order -> (len(fractions), ...).
- ``"group_mean"``: indices i_k de-duplicated and sorted, the last one + 1; group g is the mean of
  states[i_g : i_{g+1}] -> (len(unique indices) - 1, ...). TRIBE v2's release uses [0.5, 0.75, 1.0].
- ``"mean"`` / ``"sum"``: the mean / sum of the de-duplicated indices -> (1, ...).

:func:`layer_indices` always answers in indices of the full stack of N states.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["AGGREGATIONS", "TOKEN_AGGREGATIONS", "kept_states", "layer_indices", "n_output_layers", "select_layers",
           "aggregate_tokens"]

AGGREGATIONS = ("cat", "group_mean", "mean", "sum")


def _check(fractions: Sequence[float], aggregation: str) -> tuple[float, ...]:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"layer aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"layer fractions: expected a non-empty list of numbers in [0, 1], got {list(fractions)}")
    if aggregation == "group_mean" and (len(fractions) < 2 or list(fractions) != sorted(fractions)):
        raise ValueError(f"layer fractions for 'group_mean': expected >= 2 increasing boundaries, got {list(fractions)}")
    return fractions


def kept_states(n_states: int, cache_n_layers: int | None = None) -> list[int]:
    """The hidden states a ``cache_n_layers`` setting keeps: ``round(linspace(0, N - 1, K))`` (all when unset
    or K >= N), as neuralset's ``_layer_subselection``."""
    if cache_n_layers is None or cache_n_layers >= n_states:
        return list(range(n_states))
    if cache_n_layers < 2:
        raise ValueError(f"cache_n_layers: expected an integer >= 2 or null, got {cache_n_layers}")
    return [int(round(x)) for x in np.linspace(0, n_states - 1, cache_n_layers)]


def layer_indices(n_states: int, fractions: Sequence[float], aggregation: str = "cat",
                  cache_n_layers: int | None = None) -> list:
    """Indices into the full stack of ``n_states``: 'cat', a list of indices; the others, a list of groups
    (each a list of the indices averaged, or summed for 'sum')."""
    fractions = _check(fractions, aggregation)
    kept = kept_states(n_states, cache_n_layers)
    n = len(kept)
    idx = [int(f * (n - 1)) for f in fractions]
    if aggregation == "cat":
        return [kept[i] for i in idx]
    uniq = sorted(set(idx))
    if aggregation in ("mean", "sum"):
        return [[kept[i] for i in uniq]]
    if len(uniq) < 2:
        raise ValueError(f"layer fractions {list(fractions)} give a single index {uniq} of {n} hidden "
                         "states: 'group_mean' needs at least two distinct boundaries")
    uniq[-1] += 1
    return [kept[uniq[g]: uniq[g + 1]] for g in range(len(uniq) - 1)]


def n_output_layers(n_states: int, fractions: Sequence[float], aggregation: str = "cat",
                    cache_n_layers: int | None = None) -> int:
    return len(layer_indices(n_states, fractions, aggregation, cache_n_layers))


def select_layers(states, fractions: Sequence[float], aggregation: str = "cat", cache_n_layers: int | None = None):
    """states: (N, ...) stack of hidden states (numpy or torch) -> (L, ...)."""
    sel = layer_indices(states.shape[0], fractions, aggregation, cache_n_layers)
    if aggregation == "cat":
        return states[list(sel)]
    parts = [states[list(group)].sum(0) if aggregation == "sum" else states[list(group)].mean(0) for group in sel]
    if isinstance(states, np.ndarray):
        return np.stack(parts)
    import torch

    return torch.stack(parts)


TOKEN_AGGREGATIONS = ("mean", "sum", "max", "first", "last")


def aggregate_tokens(states, how: str = "mean"):
    """(K, tokens, ...) -> (K, ...): the token axis (axis 1) reduced as the release's extractors do.
    ``states=None`` only validates ``how``."""
    if how not in TOKEN_AGGREGATIONS:
        raise ValueError(f"token aggregation: expected one of {TOKEN_AGGREGATIONS}, got {how!r}")
    if states is None:
        return None
    if how == "first":
        return states[:, 0]
    if how == "last":
        return states[:, -1]
    if how == "max":
        out = states.max(1)
        return getattr(out, "values", out)  # torch returns (values, indices)
    return states.mean(1) if how == "mean" else states.sum(1)
