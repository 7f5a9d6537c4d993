"""`NForgeModel`: load a checkpoint (ours, a TRIBE v2 release directory, or a hub id) and predict."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nforge_jax.inference.checks import check_batch_size, check_finite, resolve_subject
from nforge_jax.model.checkpoint import CheckpointError, is_encoder_checkpoint, load_encoder, save_encoder
from nforge_jax.model.encoder import FmriEncoder

RELEASE_FILES = ("config.yaml", "best.ckpt")


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


def _release_cache_name(src: Path) -> str:
    ckpt = src / "best.ckpt"
    st = ckpt.stat()
    key = f"{src.absolute()}|{st.st_size}|{st.st_mtime_ns}"
    return f"tribev2-{src.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the hub endpoint opens within ``timeout`` s, else the reason it did not."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {url.hostname}:{port}: {e.strerror or type(e).__name__}"
    return None


def _download_release(repo_id: str) -> Path:
    """config.yaml + best.ckpt from the local Hugging Face cache, else downloaded into it when the hub is
    reachable. Offline (HF_HUB_OFFLINE=1, or no connection to the hub) it fails at once, instead of
    huggingface_hub retrying each file for ~20 s, and says which files to place where."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is not a local path, and huggingface_hub is not installed to fetch it") from None
    short = repo_id.split("/")[-1]

    def unavailable(why: str) -> CheckpointError:
        return CheckpointError(
            f"{repo_id!r} is not in the local Hugging Face cache and cannot be downloaded ({why}). Download "
            f"{' and '.join(RELEASE_FILES)} from https://huggingface.co/{repo_id} on a machine with network access "
            f"and put them in one directory (e.g. ./{short}/config.yaml and ./{short}/best.ckpt), then call "
            f"NForgeModel.from_pretrained('./{short}') (nforge: --checkpoint ./{short}); or fill the cache "
            f"({constants.HF_HUB_CACHE}) with `hf download {repo_id} {' '.join(RELEASE_FILES)}`.")

    try:
        paths = [Path(hf_hub_download(repo_id, name, local_files_only=True)) for name in RELEASE_FILES]
        return paths[0].parent
    except Exception:  # not (fully) cached
        pass
    if constants.HF_HUB_OFFLINE:
        raise unavailable("HF_HUB_OFFLINE is set")
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                              "all_proxy"))
    why = None if proxied else _hub_reachable(constants.ENDPOINT)  # through a proxy only a request can tell
    if why is not None:
        raise unavailable(f"offline: {why}")
    paths = []
    for name in RELEASE_FILES:
        try:
            paths.append(Path(hf_hub_download(repo_id, name)))
        except Exception as e:  # unknown repo, no access, connection lost...
            raise unavailable(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    return paths[0].parent


class NForgeModel:
    """A trained encoder ready to predict (n_TR, n_vertices) responses from features."""

    def __init__(self, encoder: FmriEncoder, *, metadata: dict | None = None, device="auto", batch_size: int = 8):
        self.device = resolve_device(device)
        self.metadata = metadata or {}
        self.batch_size = check_batch_size(batch_size)
        if self.batch_size is None:
            raise ValueError("batch_size: expected a positive integer, got None")
        self.config = encoder.config
        graphdef, state = nnx.split(encoder)
        self._graphdef = graphdef
        self._state = jax.device_put(state, self.device)
        self._forward = jax.jit(self._apply)

    # Loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id, cache_folder="./nforge_cache", device="auto", batch_size: int = 8):
        """Loads an nforge_jax checkpoint directory, a TRIBE v2 release directory (config.yaml + best.ckpt,
        converted once into `cache_folder` and reused after), or a Hugging Face hub id such as
        "facebook/tribev2" (through the standard HF cache; set HF_HUB_OFFLINE=1 to forbid the network)."""
        path = Path(path_or_id)
        if not path.exists():
            text = str(path_or_id)
            if text.count("/") == 1 and not text.startswith((".", "/")):
                path = _download_release(text)
            else:
                raise CheckpointError(f"{path}: no such file or directory (nor a hub id of the form 'org/name')")
        if is_encoder_checkpoint(path):
            encoder, meta = load_encoder(path)
            return cls(encoder, metadata=meta, device=device, batch_size=batch_size)
        if all((path / f).is_file() for f in RELEASE_FILES):
            from nforge_jax.convert.tribev2 import convert_tribev2  # needs torch; only for releases

            cached = Path(cache_folder) / _release_cache_name(path)
            if not is_encoder_checkpoint(cached):
                convert_tribev2(path, cached, overwrite=cached.exists())
            encoder, meta = load_encoder(cached)
            return cls(encoder, metadata=meta, device=device, batch_size=batch_size)
        raise CheckpointError(f"{path}: neither an nforge_jax checkpoint (config.json + params/) nor a TRIBE v2 "
                              f"release ({' + '.join(RELEASE_FILES)})")

    def save(self, path, *, overwrite=False) -> Path:
        return save_encoder(self.encoder, path, metadata=self.metadata, overwrite=overwrite)

    @property
    def extract_config(self):
        """The extraction recipe this model's features come from (an ``ExtractConfig``), or None when the
        checkpoint does not record one. ``predict(events)`` and ``nforge extract --checkpoint`` use it."""
        recipe = self.metadata.get("extract_recipe")
        if recipe is None:
            return None
        from nforge_jax.extract.recipe import ExtractConfig  # light: no torch

        return ExtractConfig.from_dict(recipe, source="checkpoint metadata.extract_recipe")

    @property
    def encoder(self) -> FmriEncoder:
        return nnx.merge(self._graphdef, self._state)

    # From media and events ----------------------------------------------------------------------
    def get_events_dataframe(self, video_path=None, audio_path=None, text_path=None, **kwargs):
        """Events (Video / Audio / Word rows) for one stimulus file; see inference/events.py."""
        from nforge_jax.inference.events import get_events_dataframe

        return get_events_dataframe(video_path=video_path, audio_path=audio_path, text_path=text_path, **kwargs)

    def predict(self, events, subject=None, **kwargs):
        """(preds (n_segments, n_vertices), segments) for an events table, aligned as TRIBE v2's predict."""
        from nforge_jax.inference.events import predict_events

        return predict_events(self, events, subject=subject, **kwargs)

    # Prediction --------------------------------------------------------------------------------
    def _apply(self, state, features, subject_ids):
        return nnx.merge(self._graphdef, state)(features, subject_ids)

    def check_inputs(self, features: Mapping[str, np.ndarray], subject) -> int:
        """Validates a {modality: (T, n_layers, dim)} dict of finite features and the subject; returns T."""
        config = self.config
        if not isinstance(features, Mapping) or not features:
            raise ValueError(f"features: expected a dict {{modality: (T, n_layers, dim)}} with some of "
                             f"{list(config.modalities)}, got {type(features).__name__}")
        expected = {m: (n, d) for m, n, d in config.feature_dims}
        n_steps = None
        for m, x in features.items():
            if m not in expected:
                raise ValueError(f"features: unknown modality {m!r}; this model takes {list(expected)}")
            shape = tuple(np.shape(x))
            if len(shape) != 3 or shape[1:] != expected[m]:
                raise ValueError(f"features[{m!r}]: expected shape (T, {expected[m][0]}, {expected[m][1]}), got {shape}")
            if n_steps is None:
                n_steps = shape[0]
            elif shape[0] != n_steps:
                raise ValueError(f"features[{m!r}]: {shape[0]} time steps, other modalities have {n_steps}")
        if n_steps == 0:
            raise ValueError("features: zero time steps")
        for m, x in features.items():
            check_finite(x, f"features[{m!r}]")
        resolve_subject(self, subject)
        return n_steps

    def predict_features(self, features: Mapping[str, np.ndarray], subject: int | str | None = None,
                         batch_size: int | None = None) -> np.ndarray:
        """{modality: (T, n_layers, dim)} at 2 Hz -> (n_TR, n_vertices) at 1 Hz.

        Missing modalities are zeros. T equal to one window (2 x n_output_timesteps) gives that window's
        output rows; other lengths are cut into consecutive windows (the last zero-padded) whose outputs are
        concatenated and trimmed to the ceil(T / 2) TRs the input covers.
        """
        n_steps = self.check_inputs(features, subject)
        subject = resolve_subject(self, subject)
        batch_size = check_batch_size(batch_size)
        config = self.config
        window, per_window = config.window_steps, config.n_output_timesteps
        n_windows = -(-n_steps // window)
        batch_size = batch_size or self.batch_size
        n_batches = -(-n_windows // batch_size)
        padded_windows = n_batches * batch_size if n_windows > batch_size else n_windows
        stacked = {}
        for m, x in features.items():
            x = np.asarray(x, np.float32)
            buf = np.zeros((padded_windows * window,) + x.shape[1:], np.float32)
            buf[:n_steps] = x
            stacked[m] = buf.reshape((padded_windows, window) + x.shape[1:])
        step = min(batch_size, padded_windows)
        outputs = []
        for start in range(0, padded_windows, step):
            chunk = {m: jax.device_put(v[start : start + step], self.device) for m, v in stacked.items()}
            ids = None if subject is None else jnp.full((step,), subject, jnp.int32)
            outputs.append(np.asarray(self._forward(self._state, chunk, ids)))
        out = np.concatenate(outputs)[:n_windows].reshape(n_windows * per_window, -1)
        n_rows = per_window if n_steps == window else -(-n_steps * per_window // window)
        return out[:n_rows]
