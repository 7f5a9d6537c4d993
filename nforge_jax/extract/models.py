"""Loading the extractors' models: offline resolution (never a download), device and dtype choice, and the
base class the text, audio and video extractors share."""

from __future__ import annotations

import os
from pathlib import Path

from nforge_jax.extract.hidden_states import layer_indices

__all__ = ["ModelNotAvailable", "resolve_model", "torch_device", "torch_dtype", "ModelExtractor"]


class ModelNotAvailable(FileNotFoundError):
    """A model id is neither a local directory nor in the local Hugging Face cache (a user's error to fix:
    the message says how)."""


def resolve_model(model_id: str | os.PathLike, what: str) -> Path:
    """A local directory, or the snapshot of a hub id already in the local Hugging Face cache.

    Never downloads. ModelNotAvailable says how to get it otherwise.
    """
    path = Path(model_id)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(f"{path}: no config.json; expected a directory written by save_pretrained "
                                    f"for the {what} model")
        return path
    text = str(model_id)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ModelNotAvailable(f"{what} model {text!r}: no such directory, and not a hub id of the form 'org/name'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, local_files_only=True))
    except Exception as exc:
        raise ModelNotAvailable(
            f"{what} model {text!r} is not in the local Hugging Face cache ({type(exc).__name__}). Fetch it on a "
            f"machine with network access with `hf download {text}` (it goes to the standard cache, "
            f"$HF_HOME/hub), or save it anywhere with `save_pretrained` and pass that directory instead.") from None


def torch_device(device: str = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = torch.device(device)
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch sees no CUDA GPU (torch {torch.__version__}); use cpu or auto")
    if out.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu or auto")
    return out


def torch_dtype(dtype: str, device):
    """"auto": bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on CPU."""
    import torch

    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype: expected 'auto' or one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


class ModelExtractor:
    """What the text, audio and video extractors share: their config, the device/dtype choice, and loading
    the model once, lazily (so building an extractor needs neither torch nor the weights)."""

    modality = ""
    config_class: type = type(None)

    def __init__(self, config=None, device: str = "auto", dtype: str = "auto"):
        self.config = self.config_class() if config is None else config
        self._device_name, self._dtype_name = device, dtype
        self._model = None

    def load(self) -> None:
        """Loads the model once: resolved locally (never downloaded), on the chosen device and dtype, in eval
        mode; then the modality's own set-up (``on_load``). A failed set-up leaves nothing half-loaded."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel

        self._torch = torch  # the extract methods use it without importing torch at module level
        path = resolve_model(self.config.model_id, self.modality)
        self.device = torch_device(self._device_name)
        self.dtype = torch_dtype(self._dtype_name, self.device)
        model = AutoModel.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        self.n_states = int(model.config.num_hidden_layers) + 1  # the embedding output included
        self.dim = int(model.config.hidden_size)
        self.n_layers = len(self.layer_indices())
        self.on_load(path, model)
        self._model = model

    def check_device(self) -> None:
        """The device this extractor runs on exists here (ValueError otherwise), without loading the model."""
        torch_device(self._device_name)

    def on_load(self, path, model) -> None:
        """The modality's set-up once its model is loaded (tokenizer, feature extractor, preprocessor)."""

    def layer_indices(self) -> list:
        """The hidden states each output layer is made of (indices of the full stack)."""
        c = self.config
        return layer_indices(self.n_states, c.layers, c.aggregation, getattr(c, "cache_n_layers", None))

    def meta(self) -> dict:
        """What the store records of this extractor: its settings, the states it used, the modality's extras."""
        self.load()
        return {"model_id": str(self.config.model_id), "layer_fractions": list(self.config.layers),
                "aggregation": self.config.aggregation, "layer_indices": self.layer_indices(),
                "n_hidden_states": self.n_states, **self.meta_extra()}

    def meta_extra(self) -> dict:
        return {}
