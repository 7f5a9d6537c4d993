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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.inference.attribution import check_roi_indices, prepare_inputs
from nforge_jax.inference.checks import resolve_subject
from nforge_jax.inference.predictor import Predictor


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
    if n_blocks < 1 or t_seq % n_blocks:
        raise ValueError(f"n_blocks: {n_blocks} does not divide the sequence length {t_seq}")
    out = {}
    for roi in roi_indices:
        if roi not in token_weights:
            raise ValueError(f"token_weights: no entry for roi {roi!r}")
        w = np.asarray(token_weights[roi], np.float64)
        if w.shape not in ((t_seq,), (b, t_seq)):
            raise ValueError(f"token_weights[{roi!r}]: expected ({t_seq},) or ({b}, {t_seq}), got {w.shape}")
        if (w < 0).any():
            raise ValueError(f"token_weights[{roi!r}]: weights must be non-negative")
        w = np.broadcast_to(w, (b, t_seq))
        total = w.sum(1, keepdims=True)
        prof = np.einsum("bq,bqk->bk", w / np.where(total > 0, total, 1.0), rollout)  # rows of R sum to 1
        prof = prof.reshape(b, n_blocks, t_seq // n_blocks).sum(1)
        out[roi] = prof.mean(0).astype(np.float32)
    return out


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
        self._weights = jax.jit(self._weights_impl)

    def _maps_impl(self, state, feats):
        return self._core.merge(state).trunk(feats, return_attention=True)[1]  # the model's own attention path

    def _weights_impl(self, state, feats, ids, roi_masks):
        encoder = self._core.merge(state)
        h = encoder.trunk(feats)

        def roi_mean(hb, idb, mask):  # one window's mean prediction over output time and the ROI
            y = encoder.readout(hb[None], None if idb is None else idb[None])[0]  # (T_out, V)
            return (y.mean(0) * mask).sum() / mask.sum()

        def contributions(mask):
            def per_window(hb, idb):
                return hb * jax.grad(roi_mean)(hb, idb, mask)

            return jax.vmap(per_window)(h, ids).sum(-1)  # (B, T); ids None: the average row for every window

        return jnp.abs(jax.vmap(contributions)(roi_masks))  # (n_roi, B, T)

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
        feats, ids, _ = prepare_inputs(self.config, inputs, self.subject)
        masks = np.zeros((len(rois), self.config.n_outputs), np.float32)
        for i, idx in enumerate(rois.values()):
            masks[i, np.unique(idx)] = 1.0
        weights = np.asarray(self._weights(self._core.state, feats, ids, jnp.asarray(masks)))
        return {roi: weights[i] for i, roi in enumerate(rois)}

    def roi_scores(self, inputs, roi_indices, residual: float = 0.5) -> dict[str, np.ndarray]:
        """`attention_to_roi_scores` of these inputs' maps with their ROI token weights."""
        n_blocks = len(self.config.modalities) if self.config.combination == "stack" else 1
        return attention_to_roi_scores(self(inputs), dict(roi_indices), self.roi_token_weights(inputs, roi_indices),
                                       residual=residual, n_blocks=n_blocks)
