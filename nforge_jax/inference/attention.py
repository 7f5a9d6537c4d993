"""Attention maps of the encoder and per-ROI temporal profiles: which input moments an ROI's prediction uses.

`AttentionExtractor(model)(inputs)` returns the per-layer attention probabilities that the model's own
attention path computes (`FmriEncoder.encoder(x, return_attention=True)`), one (B, heads, T, T) array per
layer, T being the model's sequence length (feature steps at 2 Hz; n_modalities × steps with "stack").

ROI profile (`attention_to_roi_scores`), for an ROI with vertex set S:

1. Attention rollout. Per layer l, average the heads and mix in the residual path:
   Â_l = ρ·I + (1 − ρ)·mean_heads(A_l), ρ = `residual` (0.5). Rollout R = Â_L ··· Â_1 (T × T);
   row q of R says which input steps the final state of token q draws on. Every row sums to 1.
2. Token relevance for the ROI. y_S(h) = mean over output time and over v ∈ S of the prediction, as a function
   of the final hidden states h (T × hidden). Pooling, the low-rank head and the read-out are affine, so
   y_S = Σ_q ⟨h_q, ∂y_S/∂h_q⟩ + constant exactly, and c_q = ⟨h_q, ∂y_S/∂h_q⟩ is token q's share of the ROI's
   prediction. Weight w_q = |c_q| (`AttentionExtractor.roi_token_weights`, via `jax.grad`). Different ROIs
   read different directions of h, so they weight tokens differently.
3. Profile p_S[k] = Σ_q w_q R[q, k] / Σ_q w_q: non-negative and summing to 1 (all zeros if every w_q is 0).
   With "stack" combination the per-modality blocks of the sequence are summed, so k indexes input steps.
   A batch gives the mean of its windows' profiles.

Everything after the transformer is linear in each final token (the pooling's time mean, the low-rank head,
the read-out), so c_q for any vertex set is token q's latent term times the set's mean read-out column: one
forward pass serves any number of vertex sets (`_token_latents_impl`).

Distinctness (`AttentionExtractor.roi_distinctness`): the mean Jensen-Shannon divergence (bits) between the
per-window profiles of every pair of ROIs, against the same statistic for disjoint random vertex sets of the
ROIs' sizes (permutation p, z, and the same per pair). On the demo model (held-out stimuli 11 and 12, 8
windows; V1, A1, 44, 45, MT, STSdp; 500 random draws from the cortex) the profiles are distinct above chance
but by little: 0.0236 bits against 0.0190 ± 0.0016 (z 2.9, p 0.002). ROIs planted with different modalities
differ (A1|44 z 2.6, V1|STSdp z 2.5, V1|A1 z 1.9); ROIs planted with the same one do not (44|45 z −1.2, V1|MT
z 0.5), as they should: the synthetic data give every vertex the same HRF. The divergences are small
because the rollout is diffuse: its rows spread over 5.8 of at most 7.6 bits (diagonal 0.25; stimulus 11),
so the ROIs' token weights, 0.20 bits apart before the rollout, are averaged by one shared matrix. Other
relevances did not separate the ROIs better against the same null (z 2.2-2.7 each, on stimulus 11's 4
windows): |c_q| without rollout, |c_q − mean c|, gradient × input at the transformer's input tokens, each
token's share of the ROI's time-course variance. Small random vertex sets mix modalities at random, so their
profiles differ from each other almost as much.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.inference.attribution import check_roi_indices, prepare_inputs
from nforge_jax.inference.checks import resolve_subject
from nforge_jax.inference.predictor import Predictor
from nforge_jax.model.encoder import adaptive_pool_matrix


def _as_layers(attn_maps):
    layers = []
    for i, a in enumerate(attn_maps):
        a = np.asarray(a, np.float64)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attn_maps[{i}]: expected (batch, heads, T, T) or (heads, T, T), got {a.shape}")
        if layers and a.shape[:1] + a.shape[2:] != layers[0].shape[:1] + layers[0].shape[2:]:
            raise ValueError(f"attn_maps[{i}]: shape {a.shape} does not match layer 0's {layers[0].shape}")
        layers.append(a)
    return layers


def attention_rollout(attn_maps, residual: float = 0.5) -> np.ndarray:
    """(B, T, T) rollout R = Â_L ··· Â_1 with Â_l = residual·I + (1 − residual)·mean_heads(A_l)."""
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual: expected a weight in [0, 1], got {residual!r}")
    layers = _as_layers(attn_maps)
    if not layers:
        raise ValueError("attn_maps: expected at least one layer's attention map, got none")
    b, _, t, _ = layers[0].shape
    rollout = np.broadcast_to(np.eye(t), (b, t, t)).copy()
    for a in layers:
        mixed = residual * np.eye(t) + (1.0 - residual) * a.mean(1)
        rollout = mixed @ rollout
    return rollout


def attention_to_roi_scores(attn_maps, roi_indices, token_weights=None, *, residual: float = 0.5,
                            n_blocks: int = 1) -> dict[str, np.ndarray]:
    """{roi: (T,)} temporal profiles (module docstring, steps 1 and 3): non-negative, each sums to 1.

    attn_maps: per-layer (B, heads, T_seq, T_seq) maps (e.g. from `AttentionExtractor`).
    roi_indices: {roi: vertex indices}; names which profiles to return.
    token_weights: {roi: (T_seq,) or (B, T_seq)} non-negative relevance of each final token for the ROI
        (`AttentionExtractor.roi_token_weights`). Required: without it every ROI would get the same profile.
    n_blocks: the sequence is n_blocks blocks of T steps ("stack" combination: one per modality); summed.
    """
    if not isinstance(roi_indices, dict) or not roi_indices:
        raise ValueError(f"roi_indices: expected a non-empty dict {{roi: vertex indices}}, got {roi_indices!r}")
    if token_weights is None:
        raise ValueError("token_weights: required — the relevance of each token for each ROI "
                         "(AttentionExtractor.roi_token_weights); attention alone is the same for every ROI")
    rollout = attention_rollout(attn_maps, residual)  # (B, T_seq, T_seq)
    b, t_seq, _ = rollout.shape
    _check_blocks(n_blocks, t_seq)
    weights = []
    for roi in roi_indices:
        if roi not in token_weights:
            raise ValueError(f"token_weights: no entry for roi {roi!r}")
        w = np.asarray(token_weights[roi], np.float64)
        if w.shape not in ((t_seq,), (b, t_seq)):
            raise ValueError(f"token_weights[{roi!r}]: expected ({t_seq},) or ({b}, {t_seq}), got {w.shape}")
        if (w < 0).any():
            raise ValueError(f"token_weights[{roi!r}]: weights must be non-negative")
        weights.append(np.broadcast_to(w, (b, t_seq)))
    profiles = window_profiles(rollout, np.stack(weights), n_blocks).mean(1)
    return {roi: profiles[i].astype(np.float32) for i, roi in enumerate(roi_indices)}


def _check_blocks(n_blocks: int, t_seq: int) -> None:
    if n_blocks < 1 or t_seq % n_blocks:
        raise ValueError(f"n_blocks: {n_blocks} does not divide the sequence length {t_seq}")


def window_profiles(rollout: np.ndarray, weights: np.ndarray, n_blocks: int = 1) -> np.ndarray:
    """Per-window profiles (n_roi, B, T) from a rollout (B, T_seq, T_seq) and non-negative token weights
    (n_roi, B, T_seq): p[k] = Σ_q w_q R[q, k] / Σ_q w_q (rows of R sum to 1), per-modality blocks summed."""
    n_roi, b, t_seq = weights.shape
    total = weights.sum(-1, keepdims=True)
    prof = np.einsum("nbq,bqk->nbk", weights / np.where(total > 0, total, 1.0), rollout)
    return prof.reshape(n_roi, b, n_blocks, t_seq // n_blocks).sum(2)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0 for equal distributions, 1 for disjoint ones) along the last axis."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = lambda a: np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0) / np.where(m > 0, m, 1.0)), 0.0).sum(-1)
        return np.maximum(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def _mean_masks(vertex_sets, n_outputs: int) -> np.ndarray:
    """(n, V) rows averaging each set's distinct vertices."""
    masks = np.zeros((len(vertex_sets), n_outputs), np.float32)
    for i, idx in enumerate(vertex_sets):
        idx = np.unique(idx)
        masks[i, idx] = 1.0 / len(idx)
    return masks


class AttentionExtractor:
    """Attention maps and per-ROI token relevance of an `NForgeModel` or `FmriEncoder`.

    `extractor(inputs)` -> list of per-layer (B, heads, T, T) maps; inputs as `ModalityAttributor.attribute`
    takes them ({m: (T, L, D)} or {m: (B, T, L, D)}). `roi_scores(inputs, roi_indices)` -> {roi: (T,)}.
    """

    def __init__(self, model, subject=None):
        self._core = Predictor.of(model)
        self.config = self._core.config
        self.subject = resolve_subject(model, subject)
        self._maps = jax.jit(self._maps_impl)
        self._token_latents = jax.jit(self._token_latents_impl)

    def _maps_impl(self, state, feats):
        return self._core.merge(state).trunk(feats, return_attention=True)[1]  # the model's own attention path

    def _token_latents_impl(self, state, feats, ids):
        """(token latents (B, T_seq, R), read-out weights (B or 1, R, V)): token q's term of the time-mean latent,
        p_q · head(h_q) with p the pooling's weight of q in the time mean. The head and read-out are linear
        after pooling, so token q's share of vertex v's mean prediction is latents[q] @ W[:, v] (+ a bias that
        no token carries)."""
        encoder = self._core.merge(state)
        h = encoder.trunk(feats)
        mean_pool = adaptive_pool_matrix(h.shape[1], self.config.n_output_timesteps).mean(0)
        latents = encoder.head(h, pool=jnp.diag(jnp.asarray(mean_pool)))
        return latents.astype(jnp.float32), encoder.predictor.rows(ids)[0].astype(jnp.float32)

    def _roi_contributions(self, inputs, masks: np.ndarray) -> np.ndarray:
        """Signed share c_q of each final token in each vertex set's mean prediction: masks (n, V) with rows
        summing to 1 -> (n, B, T_seq)."""
        feats, ids, _ = prepare_inputs(self.config, inputs, self.subject)
        latents, w = self._token_latents(self._core.state, feats, ids)
        per_roi = jnp.einsum("brv,nv->bnr", w, jnp.asarray(masks, jnp.float32))  # (B or 1, n, R)
        per_roi = jnp.broadcast_to(per_roi, (latents.shape[0],) + per_roi.shape[1:])
        return np.asarray(jnp.einsum("btr,bnr->nbt", latents, per_roi), np.float64)

    def __call__(self, inputs) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            inputs = {k: v for k, v in inputs.items() if k != "subject_ids"}  # maps do not depend on the subject
        feats, _, _ = prepare_inputs(self.config, inputs, None if self.config.has_average_subject else 0)
        return [np.asarray(a) for a in self._maps(self._core.state, feats)]

    def roi_token_weights(self, inputs, roi_indices) -> dict[str, np.ndarray]:
        """{roi: (B, T_seq)} |⟨h_q, ∂y_roi/∂h_q⟩|: each final token's share of the ROI's mean prediction."""
        rois = check_roi_indices(roi_indices, self.config.n_outputs)
        if not rois:
            raise ValueError("roi_indices: expected a non-empty dict {roi: vertex indices}")
        weights = np.abs(self._roi_contributions(inputs, _mean_masks(list(rois.values()), self.config.n_outputs)))
        return {roi: weights[i] for i, roi in enumerate(rois)}

    def roi_scores(self, inputs, roi_indices, residual: float = 0.5) -> dict[str, np.ndarray]:
        """`attention_to_roi_scores` of these inputs' maps with their ROI token weights."""
        n_blocks = len(self.config.modalities) if self.config.combination == "stack" else 1
        return attention_to_roi_scores(self(inputs), dict(roi_indices), self.roi_token_weights(inputs, roi_indices),
                                       residual=residual, n_blocks=n_blocks)

    def roi_distinctness(self, inputs, roi_indices, *, n_permutations: int = 200, vertex_pool=None, seed: int = 0,
                         residual: float = 0.5) -> dict:
        """How distinct the ROIs' profiles are, against ROIs of the same sizes made of random vertices.

        Distinctness: the mean Jensen-Shannon divergence (bits) between the per-window profiles of every pair
        of ROIs. Null: ``n_permutations`` draws of disjoint random vertex sets of the ROIs' sizes from
        ``vertex_pool`` (default every vertex; e.g. the cortex), through the same maps and token latents.
        Returns {"divergence", "null_mean", "null_sd", "z", "p" (one-sided, (1 + #(null >= observed)) /
        (1 + n)), "null": (n_permutations,), "pairs": {"a|b": the same five numbers for that pair alone}}.
        """
        rois = check_roi_indices(roi_indices, self.config.n_outputs)
        if len(rois) < 2:
            raise ValueError(f"roi_indices: distinctness needs at least 2 ROIs, got {len(rois)}")
        if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
            raise ValueError(f"n_permutations: expected a positive integer, got {n_permutations!r}")
        pool = np.arange(self.config.n_outputs) if vertex_pool is None else np.unique(
            check_roi_indices({"vertex_pool": np.asarray(vertex_pool)}, self.config.n_outputs)["vertex_pool"])
        for name, idx in rois.items():  # a null drawn elsewhere than the ROIs would not be their null
            outside = np.setdiff1d(idx, pool)
            if len(outside):
                raise ValueError(f"roi_indices[{name!r}]: {len(outside)} of its vertices (e.g. {int(outside[0])}) "
                                 "are not in vertex_pool, which the random ROIs of the null are drawn from")
        null_sets = _random_vertex_sets(pool, [len(np.unique(idx)) for idx in rois.values()], n_permutations, seed)
        masks = _mean_masks(list(rois.values()) + null_sets, self.config.n_outputs)
        weights = np.abs(self._roi_contributions(inputs, masks))
        n_blocks = len(self.config.modalities) if self.config.combination == "stack" else 1
        profiles = window_profiles(attention_rollout(self(inputs), residual), weights, n_blocks)
        observed, null = profiles[: len(rois)], profiles[len(rois):].reshape((n_permutations, len(rois)) +
                                                                             profiles.shape[1:])
        names = list(rois)
        i, j = np.triu_indices(len(names), 1)
        pairs = jensen_shannon(observed[i], observed[j]).mean(-1)  # (n_pairs,)
        null_pairs = jensen_shannon(null[:, i], null[:, j]).mean(-1)  # (n_permutations, n_pairs)
        divergence, null_div = float(pairs.mean()), null_pairs.mean(-1)
        out = _against_null(divergence, null_div)
        out["null"] = null_div
        out["pairs"] = {f"{names[a]}|{names[b]}": _against_null(pairs[k], null_pairs[:, k])
                        for k, (a, b) in enumerate(zip(i, j))}
        return out


def _random_vertex_sets(pool: np.ndarray, sizes: list[int], n: int, seed: int) -> list[np.ndarray]:
    """n draws of disjoint random vertex sets of the given sizes from ``pool`` (one shuffle per draw), flat."""
    if sum(sizes) > len(pool):
        raise ValueError(f"vertex_pool: {len(pool)} vertices cannot hold disjoint random ROIs of the sizes "
                         f"{sizes} (sum {sum(sizes)})")
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(sizes)[:-1]
    return [part for _ in range(n) for part in np.split(rng.permutation(pool)[: sum(sizes)], cuts)]


def _against_null(observed: float, null: np.ndarray) -> dict:
    """{"divergence", "null_mean", "null_sd", "z", "p"}: p one-sided, (1 + #(null >= observed)) / (1 + n)."""
    sd = float(null.std(ddof=1)) if len(null) > 1 else float("nan")
    mean = float(null.mean())
    return {"divergence": float(observed), "null_mean": mean, "null_sd": sd,
            "z": (float(observed) - mean) / sd if sd > 0 else float("nan"),
            "p": float((1 + (null >= observed).sum()) / (1 + len(null)))}
