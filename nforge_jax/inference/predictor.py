"""`Predictor`: the one prediction core. It owns an encoder's graphdef and its state on a device, and the
compiled path every entry point shares: windows -> latent (`FmriEncoder.trunk` + `head`) -> read-out.

`NForgeModel` (predict_features), `predict_store`, `StreamingPredictor`, `ModalityAttributor`,
`AttentionExtractor` and `SubjectAdapter` are clients: they hand it windows or merge its state inside their
own compiled functions (`Predictor.merge`), and read out through `FmriEncoder.readout` / `SubjectLayers.rows`.

A timeline of features is cut into windows of ``config.window_steps`` rows by `data.timebase` (the last one
zero-padded). Windows go through in batches of one shape (the window count padded to a multiple of the batch
size when it needs more than one batch), so each function compiles once per batch shape.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nforge_jax.data.timebase import cut_windows, n_windows, output_rows
from nforge_jax.model.encoder import FmriEncoder

__all__ = ["Predictor", "resolve_device"]


def resolve_device(device) -> jax.Device:
    """"auto" -> this process's first device; "cpu" / "gpu" / "cuda" / "tpu" -> this process's first such device.
    (Local devices: with several JAX processes, jax.devices()[0] belongs to process 0.)"""
    if isinstance(device, jax.Device):
        return device
    if device in (None, "auto"):
        return jax.local_devices()[0]
    platform = {"cuda": "gpu"}.get(device, device)
    try:
        return jax.local_devices(backend=platform)[0]
    except RuntimeError:
        raise ValueError(f"device={device!r}: no such device here (available: "
                         f"{sorted({d.platform for d in jax.devices()})})") from None


class Predictor:
    """An encoder split once into (graphdef, state), the state on ``device``; compiled forward and latent.

    The state is an argument of the compiled functions, so a differently placed copy of it (predict_store's
    replicated, sharded state) runs through the same functions.
    """

    def __init__(self, encoder: FmriEncoder, device="auto"):
        if not isinstance(encoder, FmriEncoder):
            raise ValueError(f"model: expected an NForgeModel or an FmriEncoder, got {type(encoder).__name__}")
        self.config = encoder.config
        self.device = resolve_device(device)
        self.graphdef, state = nnx.split(encoder)
        self.state = jax.device_put(state, self.device)
        self._forward = jax.jit(self._forward_impl)
        self._latent = jax.jit(self._latent_impl)

    @classmethod
    def of(cls, model) -> "Predictor":
        """The predictor of an `NForgeModel` (its own), a `Predictor` (itself) or an `FmriEncoder` (a new one)."""
        if isinstance(model, Predictor):
            return model
        if isinstance(getattr(model, "predictor", None), Predictor):
            return model.predictor
        if isinstance(model, FmriEncoder):
            return cls(model)
        raise ValueError(f"model: expected an NForgeModel or an FmriEncoder, got {type(model).__name__}")

    # The encoder ----------------------------------------------------------------------------------------
    def merge(self, state=None) -> FmriEncoder:
        """The encoder with ``state`` (default: this predictor's); inside a jitted function, pass the traced state."""
        return nnx.merge(self.graphdef, self.state if state is None else state)

    @property
    def encoder(self) -> FmriEncoder:
        return self.merge()

    # Compiled windows -> outputs ------------------------------------------------------------------------
    def _forward_impl(self, state, windows, subject_ids):
        return self.merge(state)(windows, subject_ids)

    def _latent_impl(self, state, windows):
        return self.merge(state).latent(windows)

    def forward(self, windows: Mapping[str, jax.Array], subject_ids=None, *, state=None) -> jax.Array:
        """{modality: (B, window_steps, L, D)} -> (B, n_output_timesteps, n_outputs); asynchronous (a device array).
        subject_ids: (B,) read-out rows, or None for the average subject. state: default this predictor's."""
        return self._forward(self.state if state is None else state, windows, subject_ids)

    def latent(self, windows: Mapping[str, jax.Array], *, state=None) -> jax.Array:
        """{modality: (B, window_steps, L, D)} -> the low-rank latent (B, n_output_timesteps, bottleneck)."""
        return self._latent(self.state if state is None else state, windows)

    # Timelines -> rows ------------------------------------------------------------------------------------
    def run_windows(self, features: Mapping[str, np.ndarray], fn: Callable, batch_size: int) -> np.ndarray:
        """{modality: (T, L, D)} -> fn(batch of windows) row by row, trimmed to the rows T covers.

        The features must be validated (same T for every modality). fn: {modality: (b, window_steps, L, D)}
        on the device -> (b, n_output_timesteps, ...).
        """
        window, per_window = self.config.window_steps, self.config.n_output_timesteps
        n_steps = len(next(iter(features.values())))
        n_win = n_windows(n_steps, window)
        step = min(batch_size, n_win)
        padded = -(-n_win // step) * step  # whole batches: one compiled shape
        stacked = cut_windows(features, window, padded)
        outs = [np.asarray(fn({m: jax.device_put(v[i: i + step], self.device) for m, v in stacked.items()}))
                for i in range(0, padded, step)]
        out = np.concatenate(outs)[:n_win]
        return out.reshape((n_win * per_window,) + out.shape[2:])[: output_rows(n_steps, window, per_window)]

    def predict(self, features: Mapping[str, np.ndarray], subject_id: int | None, batch_size: int) -> np.ndarray:
        """Validated {modality: (T, L, D)} -> (n_rows, n_outputs) for a resolved subject (None = average)."""
        def forward(windows):
            b = next(iter(windows.values())).shape[0]
            return self.forward(windows, None if subject_id is None else jnp.full((b,), subject_id, jnp.int32))

        return self.run_windows(features, forward, batch_size)

    def latent_rows(self, features: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
        """Validated {modality: (T, L, D)} -> the latent rows (n_rows, bottleneck) `predict` reads out."""
        return self.run_windows(features, self.latent, batch_size)
