"""`StreamingPredictor`: one TR of features in, the current TR's cortical prediction out.

A stream is a sequence of frames, one per TR. A frame holds, per modality, the features of that TR's two
2 Hz steps, shape (2, n_layers, dim); a frame given as (n_layers, dim) is one feature vector for the whole
TR and is used for both of its steps (nearest-neighbour 1 Hz -> 2 Hz). A modality left out of a frame is
*absent* at that TR: its projected input is zero, exactly as when `FmriEncoder` is called without it (this
is not the same as zero features, which still pass through the projector's bias).

The last `window_trs` frames sit in a fixed-size ring buffer on the device (2 * window_trs steps per
modality, plus per-step presence masks). Once the buffer is full, every `step_trs` frames the model runs on
the buffer in time order with ``pool=False`` and the current TR's prediction is the pooled value of the
window's last output row: with the model's own pooling matrix (`adaptive_pool_matrix(T_seq, window_trs)`)
this is the mean of the last TR's two steps. Pool, low-rank head and subject read-out are affine, so when
``window_trs == config.n_output_timesteps`` the result equals the last row of
`NForgeModel.predict_features` on the same `window_trs` frames (and row ``k`` of `predict_features` on the
whole stream when frame ``k`` ends one of its windows). Other window lengths run the same network on a
window of a different length (any length the model's position embedding accepts).

Shapes are fixed: pushing, predicting and flushing reuse one compiled function each, traced on first use.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nforge_jax.inference.checks import check_finite, readout_row, resolve_subject
from nforge_jax.inference.predictor import Predictor, resolve_device
from nforge_jax.model.encoder import adaptive_pool_matrix


# ------------------------------------------------------------------------------------------------------------
class StreamingPredictor:
    """Predicts TR by TR from a live feature stream (see the module docstring for the exact semantics).

    >>> stream = StreamingPredictor.from_nforge_model(model, window_trs=model.config.n_output_timesteps)
    >>> for frame in frames:                      # frame: {"text": (2, L, D), "audio": ..., ...}
    ...     pred = stream.push_frame(frame)       # None while warming up / between steps, else (V,)
    >>> tail = stream.flush()                     # (n_owed, V); the stream is then empty again
    """

    def __init__(self, graphdef, state, config, *, window_trs=40, step_trs=1, tr_seconds=1.0, device=None,
                 subject=None):
        if isinstance(window_trs, bool) or not isinstance(window_trs, (int, np.integer)) or window_trs < 1:
            raise ValueError(f"window_trs: expected a positive integer, got {window_trs!r}")
        if isinstance(step_trs, bool) or not isinstance(step_trs, (int, np.integer)) or step_trs < 1:
            raise ValueError(f"step_trs: expected a positive integer, got {step_trs!r}")
        if not (isinstance(tr_seconds, (int, float)) and 0 < tr_seconds < float("inf")):
            raise ValueError(f"tr_seconds: expected a finite positive number of seconds, got {tr_seconds!r}")
        self.config = config
        self.window_trs = int(window_trs)
        self.step_trs = int(step_trs)
        # Features are at 2 Hz, two steps per TR whatever its length; tr_seconds only times the outputs.
        self.tr_seconds = float(tr_seconds)
        self._row = readout_row(config, resolve_subject(config, subject))
        self.subject = subject
        steps = 2 * self.window_trs
        seq = steps * (len(config.modalities) if config.combination == "stack" else 1)
        if config.time_pos_embedding and seq > config.max_seq_len:
            raise ValueError(f"window_trs={window_trs}: a window of {seq} model steps exceeds this model's "
                             f"max_seq_len ({config.max_seq_len}); use window_trs <= "
                             f"{config.max_seq_len // (seq // self.window_trs)}")
        self.device = resolve_device(device) if device is not None else None
        self._graphdef = graphdef
        self._state = jax.device_put(state, self.device) if self.device is not None else state
        put = (lambda a: jax.device_put(a, self.device)) if self.device is not None else jnp.asarray
        self._dims = {m: (n, d) for m, n, d in config.feature_dims}
        self._steps = steps
        # Presence per step; host-side (a few hundred bytes), passed to the compiled function each call.
        self._masks = {m: np.zeros((steps,), np.float32) for m in self._dims}
        pool = adaptive_pool_matrix(seq, self.window_trs)
        self._pool_rows = put(pool)  # (window_trs, seq): row i pools TR i of a time-ordered window
        self._put = put
        self.trace_counts = {"write": 0, "hidden": 0, "readout": 0}
        self._write = jax.jit(self._write_impl, donate_argnums=(0,))
        self._hidden = jax.jit(self._hidden_impl)
        self._readout = jax.jit(self._readout_impl)
        self.reset()

    @classmethod
    def from_nforge_model(cls, model, window_trs=40, step_trs=1, tr_seconds=1.0, device=None, subject=None):
        """Streams with an `NForgeModel`'s weights (on `device`, default the model's own device)."""
        core = Predictor.of(model)
        return cls(core.graphdef, core.state, core.config, window_trs=window_trs, step_trs=step_trs,
                   tr_seconds=tr_seconds, device=device if device is not None else model.device,
                   subject=resolve_subject(model, subject))  # names resolved with the model's metadata

    # State -----------------------------------------------------------------------------------------------
    def reset(self):
        """Empties the window: zero features, every modality absent."""
        self._buffers = {m: self._put(np.zeros((self._steps, n, d), np.float32)) for m, (n, d) in self._dims.items()}
        for m in self._masks:
            self._masks[m][:] = 0.0
        self._n_frames = 0  # frames pushed since the last reset
        self._head = 0  # ring slot the next frame goes to (= the oldest frame once full)
        self._emitted_last = False  # whether the newest frame's prediction has been returned
        self._seen = set()  # modalities pushed at least once since the reset

    @property
    def n_frames(self) -> int:
        return self._n_frames

    @property
    def is_warm(self) -> bool:
        return self._n_frames >= self.window_trs

    # Compiled pieces ----------------------------------------------------------------------------------------
    def _write_impl(self, buffers, frame, slot):
        self.trace_counts["write"] += 1  # runs only while tracing
        return {m: jax.lax.dynamic_update_slice_in_dim(buffers[m], frame[m], 2 * slot, axis=0) for m in buffers}

    def _hidden_impl(self, state, buffers, masks, shift):
        self.trace_counts["hidden"] += 1
        encoder = nnx.merge(self._graphdef, state)
        feats = {m: jnp.roll(v, -2 * shift, axis=0)[None] for m, v in buffers.items()}
        masks = {m: jnp.roll(v, -2 * shift, axis=0)[None] for m, v in masks.items()}
        return encoder.trunk(feats, masks)[0]  # (seq, hidden)

    def _readout_impl(self, state, h, pool_row, row):
        self.trace_counts["readout"] += 1
        encoder = nnx.merge(self._graphdef, state)
        # the window's pooling row of this TR, then the low-rank head and the subject's read-out row
        return encoder.readout(h[None], row[None], pool=pool_row[None])[0, 0]

    # Frames ------------------------------------------------------------------------------------------------
    def _frame(self, features):
        if not isinstance(features, Mapping):
            raise ValueError(f"features: expected a dict {{modality: (2, n_layers, dim) or (n_layers, dim)}}, "
                             f"got {type(features).__name__}")
        frame, present = {}, {}
        for m in features:
            if m not in self._dims:
                raise ValueError(f"features: unknown modality {m!r}; this model takes {list(self._dims)}")
        for m, (n, d) in self._dims.items():
            if m not in features or features[m] is None:
                frame[m] = np.zeros((2, n, d), np.float32)
                present[m] = 0.0
                continue
            x = np.asarray(features[m])
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
                raise ValueError(f"features[{m!r}]: expected real numbers, got dtype {x.dtype}")
            x = x.astype(np.float32)
            if x.shape == (n, d):
                x = np.broadcast_to(x, (2, n, d))
            elif x.shape != (2, n, d):
                raise ValueError(f"features[{m!r}]: expected one TR as (2, {n}, {d}) (its two 2 Hz steps) or "
                                 f"({n}, {d}), got {x.shape}")
            # as predict_features: a NaN or inf would make every prediction of the window it stays in NaN
            check_finite(x, f"features[{m!r}] of frame {self._n_frames}")
            frame[m] = np.ascontiguousarray(x)
            present[m] = 1.0
        if not any(present.values()):
            raise ValueError(f"features: none of the model's modalities {list(self._dims)} is present")
        return frame, present

    def _predict(self, shift, rows):
        masks = {m: self._put(v) for m, v in self._masks.items()}
        h = self._hidden(self._state, self._buffers, masks, jnp.int32(shift))
        return [np.asarray(self._readout(self._state, h, self._pool_rows[r], jnp.int32(self._row))) for r in rows]

    def push_frame(self, features) -> np.ndarray | None:
        """Adds one TR; returns that TR's prediction (n_vertices,) when due, else None.

        Due = the window is full (`window_trs` frames pushed since the last reset) and the frame is the first
        full-window frame or `step_trs` frames after the previous prediction.
        """
        frame, present = self._frame(features)
        slot = self._head
        self._buffers = self._write(self._buffers, {m: self._put(v) for m, v in frame.items()}, jnp.int32(slot))
        for m, p in present.items():
            self._masks[m][2 * slot : 2 * slot + 2] = p
            if p:
                self._seen.add(m)
        self._head = (slot + 1) % self.window_trs
        self._n_frames += 1
        self._emitted_last = False
        if not self.is_warm or (self._n_frames - self.window_trs) % self.step_trs:
            return None
        self._emitted_last = True
        return self._predict(self._head, [self.window_trs - 1])[0]

    def flush(self) -> np.ndarray:
        """Returns the predictions still owed, (n, n_vertices), and resets the stream.

        Window full: the newest frame's prediction if it was not returned yet (step_trs > 1), else nothing.
        Window never filled (a stream shorter than `window_trs`): one row per pushed frame, the frames at the
        start of one window of `window_trs` TRs, the rest zero features for the modalities seen and absent for
        the others. This equals `predict_features` of the short input only when `window_trs` is the model's own
        window (``config.n_output_timesteps``): the model attends over the whole window, so a window of another
        length gives other rows.
        """
        rows = []
        if self._n_frames and not self._emitted_last:
            if self.is_warm:
                rows = self._predict(self._head, [self.window_trs - 1])
            else:
                n = self._n_frames
                for m in self._seen:
                    self._masks[m][:] = 1.0  # zero-feature padding, as predict_features pads
                rows = self._predict(0, range(n))
        n_vertices = self.config.n_outputs
        self.reset()
        return np.stack(rows) if rows else np.zeros((0, n_vertices), np.float32)
