"""`SubjectAdapter`: a read-out head for a subject the model was not trained on, from a little calibration fMRI.

Everything before the subject read-out is frozen. For each calibration run the encoder's low-rank latent
``z̄`` is computed exactly as `NForgeModel.predict_features` computes its output rows (the same 2 Hz windows,
zero-padded tail, the model's adaptive pooling to 1 Hz; `calibration_latents`), so latent row ``j`` is what
prediction row ``j`` is read out from. A new head ``y ≈ z̄ @ W + b`` is then either

* **fitted** by ridge regression with an intercept (`SubjectAdapter.from_ridge`, the `LatentRidge` solver):
  a fixed penalty, or one penalty per vertex chosen by K-fold cross-validation over a grid; or
* **borrowed** from the training subject (or the shared average row) whose head best predicts the
  calibration fMRI (`SubjectAdapter.from_nearest_neighbor`, mean Pearson r over vertices).

`SubjectAdapter.inject_into_model` adds the head to a model as one more subject, usable by
`predict_features`, `StreamingPredictor` and `ModalityAttributor` like any training subject.

Calibration data and alignment
------------------------------
``calibration`` is ``{"features": {modality: (T, n_layers, dim)}, "fmri": (n_rows, n_vertices)}`` or a list
of such runs, with an optional ``"mask": (n_rows,)`` of rows to use. Features are at 2 Hz, as for
`predict_features`, whose output has ``n_rows = ceil(T / 2)`` rows at 1 Hz; **fMRI row j is paired with
prediction row j**: the caller passes targets already aligned to the predictions. Recorded fMRI at 1 Hz
that starts with the stimulus is aligned by `align_fmri`, which applies the training pipeline's convention
(prediction row ``j`` <-> the BOLD sample at ``j + offset_s`` seconds, 5 s by default, to account for the
haemodynamic lag) and masks the rows the recording does not cover.

Ridge
-----
``W, b = argmin ||Y - Z W - 1 b||^2 + alpha ||W||^2`` (the intercept is not penalised: Z and Y are centred
on their means, ``b = mean(Y) - mean(Z) @ W``). ``alpha`` is absolute, not scaled by the number of samples.
With ``regularization="cv"`` each vertex gets the alpha of the grid with the best mean validation score
(negative mean squared error, averaged over the folds; on ties the larger alpha) over contiguous K-fold
splits (scikit-learn's ``KFold(cv)`` without shuffling, so folds are blocks of time); each fold centres with
its training rows' means. Per fold there is **one** thin SVD of the centred training latent; every alpha and
every vertex then follows in closed form in one batched, jitted computation (no loop over vertices or
alphas). The selection rule, the folds and the scores are those of himalaya's ``RidgeCV`` (numpy backend),
which the tests compare against. `LatentRidge.score` is the per-vertex coefficient of determination R²
(as scikit-learn and himalaya); `LatentRidge.correlation` is the per-vertex Pearson r.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.data.timebase import FMRI_HZ, HEMODYNAMIC_OFFSET_S, align_targets, output_rows
from nforge_jax.inference import provenance
from nforge_jax.model.checkpoint import encoder_arrays, encoder_from_arrays
from nforge_jax.model.encoder import FmriEncoder

__all__ = ["DEFAULT_ALPHAS", "LatentRidge", "SubjectAdapter", "align_fmri", "calibration_latents",
           "kfold_splits", "pearson_per_vertex", "run_adapt"]

DEFAULT_ALPHAS = np.logspace(-2, 5, 15)


# ------------------------------------------------------------------------------------------------------------
# Small helpers
def pearson_per_vertex(pred, target) -> np.ndarray:
    """Pearson r of each column; NaN where either column is constant."""
    p = np.asarray(pred, np.float64)
    y = np.asarray(target, np.float64)
    p = p - p.mean(0)
    y = y - y.mean(0)
    denom = np.sqrt((p * p).sum(0) * (y * y).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * y).sum(0) / denom
    r[denom == 0] = np.nan
    return r


def r2_per_vertex(pred, target) -> np.ndarray:
    """1 - SSE / SST per column (0 where the target column is constant, as himalaya)."""
    p = np.asarray(pred, np.float64)
    y = np.asarray(target, np.float64)
    sse = ((y - p) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - sse / sst
    r2[sst == 0] = 0.0
    return r2


def kfold_splits(n_samples: int, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous K-fold (train, validation) indices, the first ``n % K`` folds one longer: scikit-learn's
    ``KFold`` without shuffling (blocks of time), with the argument errors named as ``cv``."""
    from sklearn.model_selection import KFold  # only when folds are needed: keeps `import` light

    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise ValueError(f"cv: expected an integer number of folds >= 2, got {n_splits!r}")
    if n_splits > n_samples:
        raise ValueError(f"cv: {n_splits} folds need at least {n_splits} samples, got {n_samples}")
    return list(KFold(int(n_splits)).split(np.zeros((n_samples, 1))))


def _resolve_cv(cv, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        return kfold_splits(n_samples, int(cv))
    splits = list(cv.split(np.zeros((n_samples, 1)))) if hasattr(cv, "split") else list(cv)
    if not splits:
        raise ValueError("cv: no (train, validation) splits given")
    out = []
    for i, pair in enumerate(splits):
        try:
            train, val = (np.asarray(a, np.int64).reshape(-1) for a in pair)
        except (TypeError, ValueError):
            raise ValueError(f"cv: split {i} is not a (train indices, validation indices) pair") from None
        if train.size == 0 or val.size == 0:
            raise ValueError(f"cv: split {i} has an empty train or validation set")
        if min(train.min(), val.min()) < 0 or max(train.max(), val.max()) >= n_samples:
            raise ValueError(f"cv: split {i} has indices outside [0, {n_samples})")
        out.append((train, val))
    return out


def _check_2d(name: str, x, n_rows: int | None = None, n_cols: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples, {'features' if name == 'Z' else 'columns'}), "
                         f"got shape {x.shape}")
    if n_rows is not None and x.shape[0] != n_rows:
        raise ValueError(f"{name}: expected {n_rows} rows (one per sample of Z), got shape {x.shape}")
    if n_cols is not None and x.shape[1] != n_cols:
        raise ValueError(f"{name}: expected {n_cols} columns, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


# ------------------------------------------------------------------------------------------------------------
# Closed-form ridge, batched over alphas and vertices
@jax.jit
def _fold_scores(z_train, y_train, z_val, y_val, alphas):
    """Negative validation MSE (n_alphas, V) for every alpha and vertex from one SVD of the training latent."""
    z_mean = z_train.mean(0)
    y_mean = y_train.mean(0)
    zt, yt = z_train - z_mean, y_train - y_mean
    zv, yv = z_val - z_mean, y_val - y_mean
    u, s, vt = jnp.linalg.svd(zt, full_matrices=False)  # zt = u diag(s) vt
    a = u.T @ yt  # (k, V)
    # Validation predictions Zv V diag(s / (s^2 + alpha)) A = Q Rb diag(d) A with Zv V = Q Rb; the residual
    # splits into the part of yv outside span(Q) (alpha-free) and ||Q^T yv - Rb d A||^2 (no cancellation).
    q, rb = jnp.linalg.qr(zv @ vt.T)
    c = q.T @ yv  # (k, V)
    outside = ((yv - q @ c) ** 2).sum(0)
    d = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (n_alphas, k)
    inside = ((c[None] - jnp.einsum("ij,aj,jv->aiv", rb, d, a)) ** 2).sum(1)
    return -(outside[None] + inside) / z_val.shape[0]


@jax.jit
def _refit(z, y, alpha_per_vertex):
    """Ridge weights (k_in, V) and intercept (V,) on all rows, one alpha per vertex, one SVD."""
    z_mean = z.mean(0)
    y_mean = y.mean(0)
    u, s, vt = jnp.linalg.svd(z - z_mean, full_matrices=False)
    a = u.T @ (y - y_mean)
    d = s[:, None] / (s[:, None] ** 2 + alpha_per_vertex[None, :])  # (k, V)
    w = vt.T @ (d * a)
    return w, y_mean - z_mean @ w


class LatentRidge:
    """Ridge regression with an intercept, Y (n, V) from Z (n, R), scikit-learn style.

    alphas: a number (one fixed penalty for every vertex) or a 1-D grid searched by cross-validation
    (``cv`` folds, an iterable of (train, validation) index pairs, or a splitter with ``split``).
    After `fit`: ``coef_`` (R, V), ``intercept_`` (V,), ``best_alphas_`` (V,) and, with a grid,
    ``cv_scores_`` (V,) = mean validation negative MSE at the chosen alpha (himalaya's ``cv_scores_``).
    Computation runs in float32 with JAX on the default device.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv=5):
        if np.ndim(alphas) == 0:
            a = float(alphas)
            if not math.isfinite(a) or a < 0:
                raise ValueError(f"alphas: expected a penalty >= 0 or a 1-D grid of them, got {alphas!r}")
        else:
            grid = np.asarray(alphas, np.float64)
            if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any():
                raise ValueError(f"alphas: expected a non-empty 1-D grid of positive penalties, got {alphas!r}")
        self.alphas = alphas
        self.cv = cv

    @property
    def searches(self) -> bool:
        return np.ndim(self.alphas) > 0

    def fit(self, Z, Y) -> "LatentRidge":
        Z = _check_2d("Z", Z)
        Y = _check_2d("Y", Y, n_rows=Z.shape[0])
        n = Z.shape[0]
        if n < 2:
            raise ValueError(f"Z: at least 2 samples are needed to fit an intercept, got {n}")
        z = jnp.asarray(Z, jnp.float32)
        y = jnp.asarray(Y, jnp.float32)
        if self.searches:
            grid = np.sort(np.asarray(self.alphas, np.float64))
            splits = _resolve_cv(self.cv, n)
            scores = np.zeros((grid.size, Y.shape[1]), np.float64)
            grid_j = jnp.asarray(grid, jnp.float32)
            for train, val in splits:
                scores += np.asarray(_fold_scores(z[train], y[train], z[val], y[val], grid_j), np.float64)
            scores /= len(splits)
            # Ties go to the larger alpha (himalaya adds the same 1e-10 * log(alpha) slope).
            best = np.argmax(scores + 1e-10 * np.log(grid)[:, None], axis=0)
            self.best_alphas_ = grid[best]
            self.cv_scores_ = scores[best, np.arange(scores.shape[1])]
            self.alpha_grid_ = grid
            self.n_splits_ = len(splits)
        else:
            self.best_alphas_ = np.full(Y.shape[1], float(self.alphas))
        w, b = _refit(z, y, jnp.asarray(self.best_alphas_, jnp.float32))
        self.coef_ = np.asarray(w)
        self.intercept_ = np.asarray(b)
        self.n_features_in_ = Z.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise RuntimeError("LatentRidge: call fit(Z, Y) first")

    def predict(self, Z) -> np.ndarray:
        self._check_fitted()
        Z = _check_2d("Z", Z, n_cols=self.n_features_in_)
        return np.asarray(jnp.asarray(Z, jnp.float32) @ self.coef_ + self.intercept_)

    def score(self, Z, Y) -> np.ndarray:
        """Per-vertex coefficient of determination R² of `predict(Z)` against Y, (V,)."""
        pred = self.predict(Z)
        Y = _check_2d("Y", Y, n_rows=pred.shape[0], n_cols=pred.shape[1])
        return r2_per_vertex(pred, Y)

    def correlation(self, Z, Y) -> np.ndarray:
        """Per-vertex Pearson r of `predict(Z)` against Y, (V,)."""
        pred = self.predict(Z)
        Y = _check_2d("Y", Y, n_rows=pred.shape[0], n_cols=pred.shape[1])
        return pearson_per_vertex(pred, Y)


# ------------------------------------------------------------------------------------------------------------
# Calibration data -> (latent, targets)
def align_fmri(fmri, n_rows: int, *, offset_s: float = HEMODYNAMIC_OFFSET_S, fmri_hz: float = FMRI_HZ,
               fmri_start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Targets for the ``n_rows`` prediction rows of a run from its recorded 1 Hz fMRI.

    Row ``j`` (stimulus time ``j`` s) gets the BOLD sample recorded at ``j + offset_s`` s of stimulus time,
    i.e. ``fmri[round((offset_s - fmri_start_s) * fmri_hz) + j]`` (``fmri_start_s``: stimulus time of the first
    sample), the convention of the training pipeline. Returns (targets (n_rows, V), mask (n_rows,)) with
    zero rows and mask False where the recording has no sample.
    """
    return align_targets(fmri, n_rows, offset_s=offset_s, fmri_hz=fmri_hz, fmri_start_s=fmri_start_s)


def _as_model(model):
    """An `NForgeModel` for an `NForgeModel` or an `FmriEncoder` (wrapped, sharing its arrays)."""
    from nforge_jax.inference.model import NForgeModel

    if isinstance(model, NForgeModel):
        return model
    if isinstance(model, FmriEncoder):
        return NForgeModel(model)
    raise ValueError(f"model: expected an NForgeModel or an FmriEncoder, got {type(model).__name__}")


def _runs(calibration) -> list[Mapping]:
    if isinstance(calibration, Mapping):
        runs = [calibration]
    elif isinstance(calibration, Sequence) and not isinstance(calibration, (str, bytes)):
        runs = list(calibration)
    else:
        raise ValueError("calibration: expected {'features': {modality: (T, L, D)}, 'fmri': (n_rows, V)} or a "
                         f"list of such runs, got {type(calibration).__name__}")
    if not runs:
        raise ValueError("calibration: no runs given")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping) or "features" not in run or "fmri" not in run:
            raise ValueError(f"calibration[{i}]: expected a dict with keys 'features' and 'fmri' "
                             f"(and optionally 'mask'), got {type(run).__name__}"
                             f"{' with keys ' + str(sorted(run)) if isinstance(run, Mapping) else ''}")
    return runs


def run_latent(model, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """The low-rank latent (n_rows, R) behind `predict_features(features)`'s rows (same windows and padding)."""
    return _as_model(model).latent_features(features)


def calibration_latents(model, calibration) -> tuple[np.ndarray, np.ndarray]:
    """(Z (N, R), Y (N, V)): latent rows and their fMRI targets over all runs, masked rows dropped."""
    model = _as_model(model)
    zs, ys = [], []
    n_out = model.config.n_outputs
    for i, run in enumerate(_runs(calibration)):
        feats = run["features"]
        if not isinstance(feats, Mapping):
            raise ValueError(f"calibration[{i}]['features']: expected a dict {{modality: (T, n_layers, dim)}}, "
                             f"got {type(feats).__name__}")
        try:
            z = run_latent(model, feats)
        except ValueError as e:
            raise ValueError(f"calibration[{i}]['features']: {e}") from None
        y = np.asarray(run["fmri"], np.float32)
        if y.ndim != 2 or y.shape != (z.shape[0], n_out):
            raise ValueError(f"calibration[{i}]['fmri']: expected shape ({z.shape[0]}, {n_out}) — one row per "
                             f"prediction row of the run's features (align raw fMRI with align_fmri), got {y.shape}")
        mask = np.ones(z.shape[0], bool)
        if run.get("mask") is not None:
            mask = np.asarray(run["mask"])
            if mask.shape != (z.shape[0],) or mask.dtype != bool:
                raise ValueError(f"calibration[{i}]['mask']: expected a boolean array of shape ({z.shape[0]},), "
                                 f"got {mask.dtype} {mask.shape}")
        if not np.isfinite(y[mask]).all():
            raise ValueError(f"calibration[{i}]['fmri']: NaN or infinite values in used rows; mask them out with "
                             "'mask'")
        zs.append(z[mask])
        ys.append(y[mask])
    return np.concatenate(zs), np.concatenate(ys)


# ------------------------------------------------------------------------------------------------------------
class SubjectAdapter:
    """A read-out head (weights (R, V), bias (V,)) for a new subject on a frozen encoder.

    Build it with `from_ridge` or `from_nearest_neighbor`; `predict_latent` / `predict_features` use it
    directly; `inject_into_model` makes it a subject of the model.
    """

    def __init__(self, weights, bias, *, method: str = "given", ridge: LatentRidge | None = None,
                 source_row: int | None = None, row_scores: dict | None = None, n_samples: int | None = None):
        weights = np.asarray(weights, np.float32)
        bias = np.asarray(bias, np.float32)
        if weights.ndim != 2:
            raise ValueError(f"weights: expected (latent dim, n_vertices), got shape {weights.shape}")
        if bias.shape != (weights.shape[1],):
            raise ValueError(f"bias: expected shape ({weights.shape[1]},) to match weights, got {bias.shape}")
        self.weights, self.bias = weights, bias
        self.method = method
        self.ridge = ridge
        self.source_row = source_row
        self.row_scores = row_scores
        self.n_samples = n_samples

    # Construction ------------------------------------------------------------------------------------
    @classmethod
    def from_ridge(cls, model, calibration, regularization=1.0, alphas=DEFAULT_ALPHAS, cv=5) -> "SubjectAdapter":
        """Ridge head on the frozen latent. regularization: a penalty >= 0 (absolute), or "cv" for one alpha
        per vertex chosen over ``alphas`` by ``cv``-fold cross-validation (see the module docstring)."""
        if isinstance(regularization, str):
            if regularization != "cv":
                raise ValueError(f"regularization: expected a number >= 0 or 'cv', got {regularization!r}")
            ridge = LatentRidge(alphas, cv=cv)
        else:
            if np.ndim(regularization) != 0:
                raise ValueError(f"regularization: expected a number >= 0 or 'cv', got {regularization!r}")
            try:
                ridge = LatentRidge(float(regularization))
            except (TypeError, ValueError):
                raise ValueError(f"regularization: expected a number >= 0 or 'cv', got {regularization!r}") from None
        z, y = calibration_latents(model, calibration)
        ridge.fit(z, y)
        return cls(ridge.coef_, ridge.intercept_, method="ridge", ridge=ridge, n_samples=z.shape[0])

    @classmethod
    def from_nearest_neighbor(cls, model, calibration) -> "SubjectAdapter":
        """Copies the head (training subject, or the shared average row) with the best mean Pearson r over
        vertices on the calibration data. ``row_scores``: {row: mean r}; ``source_row``: the chosen row
        (``config.n_subjects`` = the average row)."""
        nf = _as_model(model)
        z, y = calibration_latents(nf, calibration)
        weights, bias = _head_arrays(nf)
        zj = jnp.asarray(z, jnp.float32)
        scores = {}
        for row in range(weights.shape[0]):
            pred = np.asarray(zj @ weights[row] + bias[row])
            r = pearson_per_vertex(pred, y)
            scores[row] = float(np.nanmean(r)) if np.isfinite(r).any() else -np.inf
        best = max(scores, key=lambda k: scores[k])
        return cls(weights[best], bias[best], method="nearest_neighbor", source_row=best, row_scores=scores,
                   n_samples=z.shape[0])

    # Prediction ------------------------------------------------------------------------------------
    def predict_latent(self, Z) -> np.ndarray:
        Z = _check_2d("Z", Z, n_cols=self.weights.shape[0])
        return np.asarray(jnp.asarray(Z, jnp.float32) @ self.weights + self.bias)

    def predict_features(self, model, features) -> np.ndarray:
        """Like ``model.predict_features(features)`` with this head as the subject, (n_rows, V)."""
        nf = _as_model(model)
        self._check_model(nf.config)
        return self.predict_latent(run_latent(nf, features))

    def score(self, model, calibration) -> np.ndarray:
        """Per-vertex Pearson r of this head's predictions on (held-out) data given like ``calibration``."""
        z, y = calibration_latents(model, calibration)
        return pearson_per_vertex(self.predict_latent(z), y)

    def _check_model(self, config):
        if (config.bottleneck, config.n_outputs) != self.weights.shape:
            raise ValueError(f"model: its read-out maps {config.bottleneck} latent dims to {config.n_outputs} "
                             f"vertices, this head is {self.weights.shape}")

    # Injection -------------------------------------------------------------------------------------
    def inject_into_model(self, model, name: str | None = None, *, provenance: dict | None = None) -> int:
        """Adds this head to ``model`` (an `NForgeModel` or `FmriEncoder`, changed in place) as a new subject;
        returns its id, the old ``config.n_subjects``. ``name`` (default ``adapted/<id>``) is recorded in an
        `NForgeModel`'s metadata; it must differ from the model's subject names. ``provenance`` (what the head was
        fitted on, e.g. ``calibration_subjects``: the store subjects of its calibration runs, which predictions and
        evaluations check runs against) is recorded beside it.

        The read-out rows become ``[subject 0, ..., subject n-1, new subject, average row]`` and
        ``config.n_subjects`` becomes n + 1: the shared average row stays last (the row the model's
        ``subject=None`` and training-time subject dropout use), so its *index* moves from n to n + 1 while
        ``subject=None`` keeps meaning the average subject. Old subjects keep their ids and their exact
        predictions. A model built without subject biases gets them (zero for the existing rows, which leaves
        their predictions unchanged) so that the new head keeps its intercept.
        """
        from nforge_jax.inference.model import NForgeModel

        if isinstance(model, NForgeModel):
            encoder = model.encoder
        elif isinstance(model, FmriEncoder):
            encoder = model
        else:
            raise ValueError(f"model: expected an NForgeModel or an FmriEncoder, got {type(model).__name__}")
        config = encoder.config
        self._check_model(config)
        n = config.n_subjects
        name = check_subject_name(model, default_subject_name(model, n) if name is None else name)
        arrays = encoder_arrays(encoder)
        w = arrays["predictor/weights"]
        b = arrays.get("predictor/bias")
        if b is None:
            b = np.zeros((w.shape[0], w.shape[2]), w.dtype)
        arrays["predictor/weights"] = np.concatenate([w[:n], self.weights[None].astype(w.dtype), w[n:]])
        arrays["predictor/bias"] = np.concatenate([b[:n], self.bias[None].astype(b.dtype), b[n:]])
        new_config = type(config).from_dict({**config.to_dict(), "n_subjects": n + 1, "subject_bias": True})
        new_encoder = encoder_from_arrays(new_config, arrays, source="inject_into_model")
        if isinstance(model, NForgeModel):
            metadata = dict(model.metadata)
            metadata["adapted_subjects"] = (list(metadata.get("adapted_subjects", []))
                                            + [{**self.summary(n), **(provenance or {}), "name": name}])
            if isinstance(metadata.get("subjects"), list) and len(metadata["subjects"]) == n:
                metadata["subjects"] = list(metadata["subjects"]) + [name]
            model.set_encoder(new_encoder, metadata=metadata)
        else:
            model.predictor = new_encoder.predictor
            model.config = new_config
        return n

    def summary(self, subject_id: int | None = None) -> dict:
        out = {"method": self.method, "n_samples": self.n_samples}
        if subject_id is not None:
            out["id"] = int(subject_id)
        if self.ridge is not None:
            alphas = self.ridge.best_alphas_
            out["alpha_median"] = float(np.median(alphas))
            out["alpha_search"] = bool(self.ridge.searches)
            if self.ridge.searches:
                out["cv_neg_mse_mean"] = float(np.mean(self.ridge.cv_scores_))
        if self.source_row is not None:
            out["source_row"] = int(self.source_row)
        return out


def _taken_names(model) -> list[str]:
    metadata = getattr(model, "metadata", None) or {}
    taken = [str(s) for s in metadata.get("subjects") or []]
    return taken + [str(a["name"]) for a in metadata.get("adapted_subjects", []) if isinstance(a, dict) and "name" in a]


def default_subject_name(model, subject_id: int) -> str:
    """``adapted/<id>``, or the first ``adapted/<id>-<k>`` no subject of ``model`` is named yet."""
    taken, name, k = set(_taken_names(model)), f"adapted/{subject_id}", 1
    while name in taken:
        name, k = f"adapted/{subject_id}-{k}", k + 1
    return name


def check_subject_name(model, name) -> str:
    """A new subject's name: printable, without surrounding blanks, not a number (numbers read as subject ids),
    not "average" / "None" (the shared average subject's words in records and on the command line), not a name
    ``model`` already has."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: expected a non-empty subject name, got {name!r}")
    if name != name.strip() or not name.isprintable():
        raise ValueError(f"name: {name!r} has surrounding blanks or control characters; choose a plain name")
    try:
        float(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"name: {name!r} is a number, which would read as a subject id; choose a name")
    if name.lower() in ("average", "none"):
        raise ValueError(f"name: {name!r} is the word for the shared average subject; choose another name")
    if name in _taken_names(model):
        raise ValueError(f"name: the model already has a subject named {name!r}; choose another")
    return name


def _head_arrays(model) -> tuple[jax.Array, jax.Array]:
    """Every read-out row (training subjects, then the average row when there is one): (weights, bias)."""
    head = model.encoder.predictor
    return head.rows(jnp.arange(head.weights.shape[0]))


# ------------------------------------------------------------------------------------------------------------
def run_adapt(checkpoint, store, timelines, out, regularization="cv", *, method: str = "ridge",
              alphas=DEFAULT_ALPHAS, cv: int = 5, overwrite: bool = False, name: str | None = None,
              log=print) -> dict:
    """`nforge adapt`: fit a head for a new subject from calibration runs in a FeatureStore and save the
    model with that subject added.

    checkpoint: anything `NForgeModel.from_pretrained` reads. store: a FeatureStore or its path.
    timelines: the calibration timelines (one subject's runs: features + fMRI, aligned with the store's
    ``offset_s`` / ``fmri_hz`` / ``fmri_start_s`` meta by `align_fmri`). method: "ridge" (``regularization`` a
    number or "cv") or "nearest_neighbor". name: the new subject's name (default ``adapted/<id>``). Writes an
    nforge_jax checkpoint at ``out``; returns a summary with the new subject's id and name.
    """
    from nforge_jax.data.provenance import check_store_recipe
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.model import NForgeModel

    if method not in ("ridge", "nearest_neighbor"):
        raise ValueError(f"method: expected 'ridge' or 'nearest_neighbor', got {method!r}")
    if isinstance(timelines, str):
        timelines = [timelines]
    if not timelines:
        raise ValueError("timelines: expected at least one calibration timeline")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {out} already exists (pass overwrite=True to replace it)")
    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    model = NForgeModel.from_pretrained(checkpoint)
    if name is not None:
        check_subject_name(model, name)  # before the fit, not after it
    timelines = provenance.check_unique(timelines, "timelines")
    runs, made_from = _calibration_runs(model, store, timelines, log)
    check_store_recipe(store, timelines, model.metadata.get("extract_recipe"))
    if method == "ridge":
        adapter = SubjectAdapter.from_ridge(model, runs, regularization=regularization, alphas=alphas, cv=cv)
    else:
        adapter = SubjectAdapter.from_nearest_neighbor(model, runs)
    subject_id = adapter.inject_into_model(model, name=name, provenance=made_from)
    name = model.metadata["adapted_subjects"][-1]["name"]
    path = model.save(out, overwrite=overwrite)
    summary = {**adapter.summary(subject_id), "name": name, "checkpoint": str(path), "timelines": list(timelines),
               "provenance": made_from}
    log(f"new subject {name!r}, id {subject_id} ({method}); saved {path}")
    return summary


def _calibration_runs(model, store, timelines: list[str], log) -> tuple[list[dict], dict]:
    """The calibration runs of `run_adapt` ({features, fmri, mask} each) and what they are (recorded with the new
    head): every run of one subject, at the model's feature rate and output space, long enough to calibrate on."""
    from nforge_jax.data.spaces import check_same_space

    for timeline in timelines:
        if timeline not in store:
            raise ValueError(f"timelines: {timeline!r} is not in the store ({len(store)} timelines)")
        if store.fmri(timeline) is None:
            raise ValueError(f"timelines: {timeline!r} has no fMRI to calibrate on")
    subject = provenance.check_one_subject(store, timelines, what="nforge adapt calibration runs")
    hz = provenance.model_feature_hz(model.config)
    runs = []
    for timeline in timelines:
        check_same_space(model.output_space, store.timeline_space(timeline), expected_what="the model",
                         got_what=f"calibration timeline {timeline!r}")
        provenance.check_feature_rate(store, timeline, hz)
        provenance.check_durations(store, timeline)
        meta = store.meta(timeline)
        feats = {m: np.asarray(store.features(timeline, m), np.float32) for m in store.modalities(timeline)
                 if m in model.config.modalities}
        if not feats:
            raise ValueError(f"timelines: {timeline!r} has none of the model's modalities "
                             f"{list(model.config.modalities)}")
        n_steps = next(iter(feats.values())).shape[0]
        n_rows = output_rows(n_steps, model.config.window_steps, model.config.n_output_timesteps)
        offset = meta.get("offset_s", HEMODYNAMIC_OFFSET_S)
        targets, mask = align_fmri(np.asarray(store.fmri(timeline), np.float32), n_rows, offset_s=offset,
                                   fmri_hz=meta.get("fmri_hz", 1.0), fmri_start_s=meta.get("fmri_start_s", 0.0))
        if mask.sum() < 2:
            raise ValueError(f"timelines: {timeline!r} gives {int(mask.sum())} prediction rows with fMRI "
                             f"({n_rows} rows of features, {len(targets)} fMRI samples, hemodynamic offset "
                             f"{offset:g} s); a calibration run needs at least 2 (runs longer than the offset)")
        runs.append({"features": feats, "fmri": targets, "mask": mask})
        log(f"calibration run {timeline}: {int(mask.sum())} of {n_rows} rows with fMRI")
    made_from = {"calibration_subjects": [subject] if subject else [], "base_model_sha256": model.fingerprint(),
                 "store": str(store.path), "feature_hz": hz,
                 "calibration": [provenance.timeline_identity(store, t) for t in timelines]}
    return runs, made_from
