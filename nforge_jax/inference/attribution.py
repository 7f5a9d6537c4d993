"""`ModalityAttributor`: how much each modality moves each vertex's prediction.

The attributed quantity is F_v(x): vertex v's prediction averaged over the window's output time steps (and
over the windows of a batch). Scores are signed.

Baselines (what a modality is compared with):
  "zeros"   — the modality's input features set to zero (they still pass through the projector's bias);
  "missing" — the modality absent: its projected input is zero, as when the model is called without it.

Methods:
  "ablation" — score_m = F(x) − F(x with modality m replaced by its baseline); M + 1 forward passes in one call.
  "gradient" — integrated gradients on the straight path from the baseline (every modality at its baseline)
      to x. Each modality m gets a scale s_m on its features ("zeros") or on its projection ("missing"), so the
      path is s = α·1 and IG_m = ∫₀¹ ∂F/∂s_m(α·1) dα, approximated with the midpoint rule at `n_steps`
      points. Completeness: Σ_m IG_m,v = F_v(x) − F_v(baseline) up to the quadrature error, which shrinks as
      n_steps grows (≈ 1/n_steps²).
      Everything after the model's low-rank latent is affine: F(x) = z̄(x) @ W + b with z̄ the time-averaged
      latent (R dims) and W the subject's read-out (R, V). So IG_m,v = Σ_r W[r, v] · IG_m(z̄_r): the
      (R × M) Jacobian of z̄ with respect to the M modality scales comes from M forward-mode products
      (`jax.jacfwd`), vmapped over the n_steps path points in one jitted call, and a single (M, R) @ (R, V)
      product gives every vertex. The cost is about n_steps × M forward-mode passes — independent of the
      number of vertices, instead of one backward pass per vertex.

`attribute_timesteps` gives, for one vertex set, integrated gradients per input time step (and per feature
with the "zeros" baseline) through `jax.grad` of the set's mean prediction, batched over the path points.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.inference.checks import check_features, readout_row, resolve_subject
from nforge_jax.inference.predictor import Predictor
from nforge_jax.model.encoder import FmriEncoder, adaptive_pool_matrix

METHODS = ("ablation", "gradient")
BASELINES = ("zeros", "missing")


def check_roi_indices(roi_indices, n_outputs: int) -> dict[str, np.ndarray]:
    """{name: vertex indices} -> {name: int64 array}; raises ValueError naming a bad ROI."""
    if roi_indices is None:
        return {}
    if not isinstance(roi_indices, Mapping):
        raise ValueError(f"roi_indices: expected a dict {{roi name: vertex indices}}, got {type(roi_indices).__name__}")
    out = {}
    for name, idx in roi_indices.items():
        arr = np.asarray(idx)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"roi_indices[{name!r}]: expected a non-empty 1-D array of vertex indices, "
                             f"got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"roi_indices[{name!r}]: expected integer vertex indices, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= n_outputs:
            raise ValueError(f"roi_indices[{name!r}]: vertex indices must lie in [0, {n_outputs}), "
                             f"got [{arr.min()}, {arr.max()}]")
        out[str(name)] = arr.astype(np.int64)
    return out


def prepare_inputs(config, inputs, subject):
    """inputs {m: (T, L, D)} or {m: (B, T, L, D)} [+ "subject_ids": (B,)] -> (features (B, T, L, D), ids, batched).

    subject: a resolved subject (None = the average subject, else a training-subject index). ids is None for
    the average subject, else an int32 (B,) array of read-out rows.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError(f"inputs: expected a dict {{modality: (T, n_layers, dim) or (B, T, n_layers, dim)}}, "
                         f"got {type(inputs).__name__}")
    feats = {m: x for m, x in inputs.items() if m not in ("subject_ids", "fmri")}
    if not feats:
        raise ValueError(f"inputs: none of the model's modalities {list(config.modalities)} is present")
    lead = check_features(config, feats, leads=(("T",), ("B", "T")), where="inputs")
    batched = len(lead) == 2
    feats = {m: jnp.asarray(x, jnp.float32) for m, x in feats.items()}
    if not batched:
        feats = {m: x[None] for m, x in feats.items()}
    b = next(iter(feats.values())).shape[0]
    ids = inputs.get("subject_ids")
    if subject is not None and ids is not None:
        raise ValueError("subject: given both as an argument and as inputs['subject_ids']; pass one")
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != (b,) or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= config.n_subjects:
            raise ValueError(f"inputs['subject_ids']: expected {b} integers in [0, {config.n_subjects}), got {ids!r}")
        return feats, jnp.asarray(ids, jnp.int32), batched
    row = readout_row(config, resolve_subject(config, subject))
    return feats, (None if subject is None else jnp.full((b,), row, jnp.int32)), batched


def scaled_mean_latent(encoder: FmriEncoder, feats, scales, baseline: str):
    """Time-averaged low-rank latent (B, R) with per-modality, per-step scales {m: (B, T)}.

    "zeros": the scale multiplies the features; "missing": it multiplies the projection. The time average is
    over the model's pooled output rows, i.e. the pooled latent's mean.
    """
    if baseline == "zeros":
        h = encoder.trunk({m: x * scales[m][..., None, None] for m, x in feats.items()})
    else:
        h = encoder.trunk(feats, masks=scales)
    pool = adaptive_pool_matrix(h.shape[1], encoder.config.n_output_timesteps)
    # the mean over output rows of the pooled sequence, pooled in one step (pool and head are affine)
    z = encoder.head(h, pool=pool.mean(0)[None])
    return z[:, 0].astype(jnp.float32)


def latent_to_vertices(encoder, z_bar, ids):
    """(B, R) time-averaged latents -> batch-mean predictions (V,)."""
    w, b = encoder.predictor.rows(ids)  # (B or 1, R, V), (B or 1, V)
    w = jnp.broadcast_to(w, (z_bar.shape[0],) + w.shape[1:]).astype(jnp.float32)
    b = jnp.broadcast_to(b, (z_bar.shape[0], w.shape[-1])).astype(jnp.float32)
    return (jnp.einsum("br,brv->v", z_bar, w) + b.sum(0)) / z_bar.shape[0]


class ModalityAttributor:
    """Per-vertex modality attribution (see the module docstring for definitions).

    model: an `NForgeModel` or an `FmriEncoder`. roi_indices: {roi name: vertex indices} for ROI summaries.
    subject: None (average subject) or a training-subject index; a batch may instead carry "subject_ids".
    """

    def __init__(self, model, method="ablation", roi_indices=None, n_steps=5, baseline="zeros", subject=None):
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline: expected one of {BASELINES}, got {baseline!r}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps: expected a positive integer, got {n_steps!r}")
        self._core = Predictor.of(model)
        self.config = self._core.config
        self.method, self.baseline, self.n_steps = method, baseline, int(n_steps)
        self.roi_indices = check_roi_indices(roi_indices, self.config.n_outputs)
        # subjects are resolved with the model's names (metadata), when it has them
        self._subjects = SimpleNamespace(config=self.config, metadata=getattr(model, "metadata", None))
        self.subject = resolve_subject(self._subjects, subject)
        self._gradient = jax.jit(self._gradient_impl)
        self._ablation = jax.jit(self._ablation_impl)
        self._timesteps = jax.jit(self._timesteps_impl)

    @property
    def alphas(self) -> np.ndarray:
        """Midpoint-rule path points (k + 1/2) / n_steps."""
        return ((np.arange(self.n_steps) + 0.5) / self.n_steps).astype(np.float32)

    # Compiled cores --------------------------------------------------------------------------------------------
    def _names(self, feats):
        # Model order; never dict order (jit hands dicts back with sorted keys).
        return [m for m in self.config.modalities if m in feats]

    def _z_bar_fn(self, encoder, feats):
        names = self._names(feats)
        b, t = next(iter(feats.values())).shape[:2]

        def z_bar(s):  # s: (M,) one scale per present modality
            scales = {m: jnp.broadcast_to(s[i], (b, t)) for i, m in enumerate(names)}
            return scaled_mean_latent(encoder, feats, scales, self.baseline)  # (B, R)

        return names, z_bar

    def _gradient_impl(self, state, feats, ids, alphas):
        encoder = self._core.merge(state)
        names, z_bar = self._z_bar_fn(encoder, feats)
        ones = jnp.ones((len(names),), jnp.float32)
        jac = jax.vmap(lambda a: jax.jacfwd(z_bar)(a * ones))(alphas)  # (n_steps, B, R, M)
        ig_latent = jac.mean(0)  # (B, R, M)
        w, _ = encoder.predictor.rows(ids)
        w = jnp.broadcast_to(w, (ig_latent.shape[0],) + w.shape[1:]).astype(jnp.float32)
        ig = jnp.einsum("brm,brv->mv", ig_latent, w) / ig_latent.shape[0]  # (M, V)
        f_x = latent_to_vertices(encoder, z_bar(ones), ids)
        f_base = latent_to_vertices(encoder, z_bar(0.0 * ones), ids)
        return ig, f_x, f_base

    def _ablation_impl(self, state, feats, ids):
        encoder = self._core.merge(state)
        names, z_bar = self._z_bar_fn(encoder, feats)
        m = len(names)
        s = jnp.concatenate([jnp.ones((1, m)), 1.0 - jnp.eye(m)], axis=0)  # all on, then each one off
        z = jax.lax.map(z_bar, s)  # (M + 1, B, R), sequential: memory of one forward
        f = jax.vmap(lambda zz: latent_to_vertices(encoder, zz, ids))(z)  # (M + 1, V)
        return f[0] - f[1:], f[0]

    def _timesteps_impl(self, state, feats, ids, alphas, vertices):
        encoder = self._core.merge(state)
        names = self._names(feats)
        b, t = next(iter(feats.values())).shape[:2]

        def target(scaled_feats, scales):
            z = scaled_mean_latent(encoder, scaled_feats, scales, "missing")
            return latent_to_vertices(encoder, z, ids)[vertices].mean()

        ones = {m: jnp.ones((b, t), jnp.float32) for m in names}
        if self.baseline == "zeros":
            def grad_at(a):
                return jax.grad(lambda f: target(f, ones))({m: a * x for m, x in feats.items()})

            grads = jax.vmap(grad_at)(alphas)
            per_feature = {m: feats[m] * grads[m].mean(0) for m in names}  # (B, T, L, D)
            per_step = {m: v.sum((-2, -1)) for m, v in per_feature.items()}
            total = target(feats, ones) - target({m: 0.0 * x for m, x in feats.items()}, ones)
        else:
            def grad_at(a):
                return jax.grad(lambda s: target(feats, s))({m: a * v for m, v in ones.items()})

            grads = jax.vmap(grad_at)(alphas)
            per_step = {m: grads[m].mean(0) for m in names}  # (B, T)
            per_feature = {}
            total = target(feats, ones) - target(feats, {m: 0.0 * v for m, v in ones.items()})
        return per_step, per_feature, total

    # Public ---------------------------------------------------------------------------------------------------
    def attribute(self, inputs, subject=None) -> dict:
        """Per-vertex scores for every modality of the model (absent modalities score exactly 0).

        Returns {m: (V,) signed, f"{m}_abs": |score|, f"{m}_normalised": |score_m| / Σ_m' |score_m'| (0 where
        the sum is 0), f"{m}_roi": {roi: mean signed score}, f"{m}_roi_abs": {roi: mean |score|},
        "prediction": F(x) (V,)}; with method="gradient" also "baseline_prediction": F(baseline) and
        "completeness_gap": Σ_m score_m − (F(x) − F(baseline)) (V,).
        """
        subject = self.subject if subject is None else resolve_subject(self._subjects, subject)
        feats, ids, _ = prepare_inputs(self.config, inputs, subject)
        names = self._names(feats)
        out = {}
        if self.method == "gradient":
            ig, f_x, f_base = self._gradient(self._core.state, feats, ids, jnp.asarray(self.alphas))
            scores = np.asarray(ig)
            out["baseline_prediction"] = np.asarray(f_base)
            out["completeness_gap"] = scores.sum(0) - (np.asarray(f_x) - out["baseline_prediction"])
        else:
            diff, f_x = self._ablation(self._core.state, feats, ids)
            scores = np.asarray(diff)
        out["prediction"] = np.asarray(f_x)
        per_modality = {m: np.zeros(self.config.n_outputs, np.float32) for m in self.config.modalities}
        for i, m in enumerate(names):
            per_modality[m] = scores[i].astype(np.float32)
        total = sum(np.abs(v) for v in per_modality.values())
        safe = np.where(total > 0, total, 1.0)
        for m, v in per_modality.items():
            out[m] = v
            out[f"{m}_abs"] = np.abs(v)
            out[f"{m}_normalised"] = np.where(total > 0, np.abs(v) / safe, 0.0).astype(np.float32)
            out[f"{m}_roi"] = {r: float(v[idx].mean()) for r, idx in self.roi_indices.items()}
            out[f"{m}_roi_abs"] = {r: float(np.abs(v[idx]).mean()) for r, idx in self.roi_indices.items()}
        return out

    def attribute_timesteps(self, inputs, vertices, subject=None) -> dict:
        """Integrated gradients of the mean prediction of `vertices` (an ROI name or vertex indices).

        Returns {m: per-input-step scores (T,) [(B, T) for a batch], f"{m}_features": per-feature scores
        (T, L, D) [(B, T, L, D)] with the "zeros" baseline, "total": F_set(x) − F_set(baseline),
        "completeness_gap": Σ scores − total}. Modalities absent from `inputs` are not listed.
        """
        if isinstance(vertices, str):
            if vertices not in self.roi_indices:
                raise ValueError(f"vertices: unknown roi {vertices!r}; known: {sorted(self.roi_indices)}")
            idx = self.roi_indices[vertices]
        else:
            idx = check_roi_indices({"vertices": np.atleast_1d(np.asarray(vertices))}, self.config.n_outputs)["vertices"]
        subject = self.subject if subject is None else resolve_subject(self._subjects, subject)
        feats, ids, batched = prepare_inputs(self.config, inputs, subject)
        per_step, per_feature, total = self._timesteps(self._core.state, feats, ids, jnp.asarray(self.alphas),
                                                       jnp.asarray(idx, jnp.int32))
        unbatch = (lambda a: np.asarray(a)) if batched else (lambda a: np.asarray(a)[0])
        out = {m: unbatch(v) for m, v in per_step.items()}
        out.update({f"{m}_features": unbatch(v) for m, v in per_feature.items()})
        out["total"] = float(total)
        out["completeness_gap"] = float(sum(np.asarray(v).sum() for v in per_step.values())) - out["total"]
        return out
