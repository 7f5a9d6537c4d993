"""`NForgeModel`: load a checkpoint (ours, a TRIBE v2 release directory, or a hub id) and predict."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import jax
import numpy as np
from flax import nnx

from nforge_jax.data.spaces import OutputSpace, space_of
from nforge_jax.inference.checks import check_batch_size, check_features, check_finite, resolve_subject
from nforge_jax.inference.predictor import Predictor, resolve_device
from nforge_jax.model.checkpoint import CheckpointError, is_encoder_checkpoint, load_encoder, save_encoder
from nforge_jax.model.encoder import FmriEncoder

__all__ = ["NForgeModel", "RELEASE_FILES", "resolve_device"]

RELEASE_FILES = ("config.yaml", "best.ckpt")


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


def recorded_space(metadata: Mapping, config, where: str = "metadata.output_space") -> OutputSpace:
    """The output space checkpoint metadata records, checked against the model's ``config.n_outputs``
    (CheckpointError naming ``where`` when the record is malformed or counts other columns); inferred from
    n_outputs when none is recorded."""
    try:
        return space_of(metadata.get("output_space"), int(config.n_outputs), where)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


class NForgeModel:
    """A trained encoder ready to predict (n_TR, n_vertices) responses from features.

    ``predictor`` (an `inference.predictor.Predictor`) holds the weights on ``device`` and the compiled
    prediction path; batched, streaming, attribution, attention and adaptation code use it through there.
    """

    def __init__(self, encoder: FmriEncoder, *, metadata: dict | None = None, device="auto", batch_size: int = 8):
        self.batch_size = check_batch_size(batch_size)
        if self.batch_size is None:
            raise ValueError("batch_size: expected a positive integer, got None")
        self.metadata = metadata or {}
        recorded_space(self.metadata, encoder.config)
        self.predictor = Predictor(encoder, device)
        self._fingerprint = None

    @property
    def config(self):
        return self.predictor.config

    @property
    def device(self) -> jax.Device:
        return self.predictor.device

    def set_encoder(self, encoder: FmriEncoder, *, metadata: dict | None = None) -> None:
        """Replaces the weights (and the metadata, when given) in place, on the same device: a subject added
        by `SubjectAdapter.inject_into_model` is then predicted like any other."""
        recorded_space(self.metadata if metadata is None else metadata, encoder.config)
        self.predictor = Predictor(encoder, self.device)
        if metadata is not None:
            self.metadata = metadata
        self._fingerprint = None

    @property
    def output_space(self) -> OutputSpace:
        """What the output columns are (`data.spaces`): ``metadata["output_space"]``, else inferred from
        ``config.n_outputs`` (20,484 -> fsaverage5, else unspecified)."""
        return recorded_space(self.metadata, self.config)

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
        if all((path / f).is_file() for f in RELEASE_FILES) and not is_encoder_checkpoint(path):
            from nforge_jax.convert.tribev2 import convert_tribev2  # needs torch; only for releases

            cached = Path(cache_folder) / _release_cache_name(path)
            if not is_encoder_checkpoint(cached):
                convert_tribev2(path, cached, overwrite=cached.exists())
            path = cached
        if is_encoder_checkpoint(path):
            encoder, meta = load_encoder(path)
            recorded_space(meta, encoder.config, f"{path / 'config.json'} field 'metadata.output_space'")
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
        return self.predictor.encoder

    def fingerprint(self) -> str:
        """sha256 of the configuration, training-subject names and parameter bytes (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"config": self.config.to_dict(), "subjects": self.metadata.get("subjects")},
                                indent=1, sort_keys=True).encode())
            # One array on the host at a time (measured ~1.2 s per GB on one CPU core: ~0.6 s for the released model).
            flat = {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(self.predictor.state)}
            for key in sorted(flat):
                value = np.ascontiguousarray(np.asarray(flat[key][...]))
                h.update(f"{key}|{value.dtype.str}|{value.shape}".encode())
                h.update(memoryview(value).cast("B"))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # From media and events ----------------------------------------------------------------------
    def get_events_dataframe(self, video_path=None, audio_path=None, text_path=None, **kwargs):
        """Events (Video / Audio / Word rows) for one stimulus file; see inference/stimulus.py."""
        from nforge_jax.inference.stimulus import get_events_dataframe

        return get_events_dataframe(video_path=video_path, audio_path=audio_path, text_path=text_path, **kwargs)

    def predict(self, events, subject=None, **kwargs):
        """(preds (n_segments, n_vertices), segments) for an events table, aligned as TRIBE v2's predict."""
        from nforge_jax.inference.segments import predict_events

        return predict_events(self, events, subject=subject, **kwargs)

    def predict_media(self, paths, out, **kwargs) -> dict:
        """Media files or folders (mp4 / wav / txt / TextGrid) -> events, features, predictions, and per file a
        viewer page, the mean-activity map and the variance-share maps under ``out``; see nforge_jax/media.py."""
        from nforge_jax.media import predict_media

        return predict_media(self, paths, out, **kwargs)

    # Prediction --------------------------------------------------------------------------------
    def check_inputs(self, features: Mapping[str, np.ndarray], subject) -> int:
        """Validates a {modality: (T, n_layers, dim)} dict of finite features and the subject; returns T."""
        (n_steps,) = check_features(self.config, features, leads=(("T",),))
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
        self.check_inputs(features, subject)
        subject_id = resolve_subject(self, subject)
        batch_size = check_batch_size(batch_size) or self.batch_size
        return self.predictor.predict(features, subject_id, batch_size)

    def latent_features(self, features: Mapping[str, np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """The low-rank latent (n_TR, bottleneck) that `predict_features` reads its rows out from."""
        self.check_inputs(features, None if self.config.has_average_subject else 0)
        return self.predictor.latent_rows(features, check_batch_size(batch_size) or self.batch_size)
