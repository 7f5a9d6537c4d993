"""The extraction recipe: every setting that changes the features a model was trained on.

:class:`ExtractConfig` holds one :class:`TextConfig` / :class:`AudioConfig` / :class:`VideoConfig` per
modality plus the modalities to extract and run settings (device, dtype, progress bar) that do not change
the features. The recipe travels with the checkpoint (``metadata["extract_recipe"]``, written by
``nforge convert tribev2`` and by training) and with every FeatureStore timeline
(``meta["extract_recipe"]``, see :mod:`nforge_jax.data.provenance`), so that a store extracted another way is refused by name
instead of giving plausible but wrong predictions.

:meth:`ExtractConfig.from_tribev2_config` reads the extraction settings of a TRIBE v2 ``config.yaml``
(``data.text_feature``, ``data.audio_feature``, ``data.video_feature.image``, with ``data.layers_to_use`` /
``data.layer_aggregation`` overriding each extractor's, as TRIBE's ``Data`` does). Fields that only say
where or how to run (``infra``, ``device``...) are skipped; any other field is either read or refused by
name, so a recipe this code cannot honour never extracts silently.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

from nforge_jax.data.plain_yaml import load_plain_yaml
from nforge_jax.extract.audio import AudioConfig
from nforge_jax.extract.text import TextConfig
from nforge_jax.extract.video import VideoConfig

__all__ = ["MODALITIES", "ExtractConfig", "RecipeError"]

MODALITIES = ("text", "audio", "video")
RECIPE_FORMAT = 1
_CLASSES = {"text": TextConfig, "audio": AudioConfig, "video": VideoConfig}
# Fields of TRIBE's extractor configs that do not change the features.
_RUN_ONLY = {"name", "device", "infra", "allow_missing", "language", "batch_size_per_gpu"}


class RecipeError(ValueError):
    """A recipe that is malformed, or that this code cannot reproduce: names the field."""


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


def _config(modality: str, fields: Mapping[str, Any], source: str):
    cls = _CLASSES[modality]
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, Mapping):
        raise RecipeError(f"{source}: field {modality!r} must be a mapping of settings, got {type(fields).__name__}")
    unknown = sorted(set(fields) - known)
    if unknown:
        raise RecipeError(f"{source}: unknown field {modality}.{unknown[0]} (known: {', '.join(sorted(known))})")
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for k, v in fields.items():
        expected, accepts = _FIELD_TYPES.get(types[k].replace("typing.", ""), (None, None))
        if accepts is not None and not accepts(v):  # "4" for 4 or "yes" for true would pass, or fail far away
            raise RecipeError(f"{source}: field {modality}.{k} is {v!r}; expected {expected}")
    try:
        return cls(**{k: _freeze(v) for k, v in fields.items()})
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{source}: {modality}: {e}") from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# a setting's annotation -> (what it takes, in words; the check)
_FIELD_TYPES = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "int | None": ("an integer or null", lambda v: v is None or isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", _is_number),
    "tuple[float, ...]": ("a list of numbers", lambda v: isinstance(v, (list, tuple)) and all(map(_is_number, v))),
}


DTYPES = ("auto", "float32", "float16", "bfloat16")  # as extract.models.torch_dtype reads them


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    text: TextConfig = TextConfig()
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()
    modalities: tuple[str, ...] = MODALITIES
    device: str = "auto"  # "auto": cuda if available, else cpu
    dtype: str = "auto"  # "auto": bfloat16/float16 on GPU, float32 on CPU
    progress: bool = True

    def __post_init__(self):
        mods = tuple(self.modalities)
        bad = [m for m in mods if m not in MODALITIES]
        if bad or not mods:
            raise ValueError(f"ExtractConfig.modalities: expected a non-empty subset of {MODALITIES}, got {mods}")
        object.__setattr__(self, "modalities", mods)
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"ExtractConfig.device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"ExtractConfig.dtype: expected one of {DTYPES}, got {self.dtype!r}")

    # The recipe as plain data -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The feature-changing settings as JSON-ready data (device, dtype and progress are left out)."""
        out = {"format": RECIPE_FORMAT, "modalities": list(self.modalities)}
        for m in MODALITIES:
            out[m] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, m)).items()}
        return out

    @classmethod
    def from_dict(cls, recipe: Mapping, source: str = "extract recipe", **run) -> "ExtractConfig":
        """The inverse of :meth:`to_dict`; ``run`` sets device / dtype / progress. Unknown fields are errors."""
        if not isinstance(recipe, Mapping):
            raise RecipeError(f"{source}: expected a mapping, got {type(recipe).__name__}")
        unknown = sorted(set(recipe) - {"format", "modalities", *MODALITIES})
        if unknown:
            raise RecipeError(f"{source}: unknown field {unknown[0]!r} (known: format, modalities, text, audio, video)")
        if recipe.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
            raise RecipeError(f"{source}: field 'format' is {recipe.get('format')!r}; this version reads {RECIPE_FORMAT}")
        parts = {m: _config(m, recipe[m], source) for m in MODALITIES if m in recipe}
        mods = recipe.get("modalities", MODALITIES)
        if not isinstance(mods, (list, tuple)) or not all(m in MODALITIES for m in mods):
            raise RecipeError(f"{source}: field 'modalities' must list some of {MODALITIES}, got {mods!r}")
        return cls(**parts, modalities=tuple(mods), **run)

    def with_model_ids(self, **model_ids: str | None) -> "ExtractConfig":
        """The same recipe with some models replaced (e.g. a local directory holding the same architecture)."""
        parts = {m: dataclasses.replace(getattr(self, m), model_id=str(v)) for m, v in model_ids.items() if v}
        return dataclasses.replace(self, **parts)

    def with_batch_sizes(self, **batch_sizes: int | None) -> "ExtractConfig":
        """The same recipe with other clips / chunks per forward (None: unchanged). Only the batch sizes that
        change no feature (provenance's NOT_COMPARED) may be set this way."""
        from nforge_jax.data.provenance import NOT_COMPARED

        speed_only = NOT_COMPARED["batch_size"]
        for m in batch_sizes:
            if m not in speed_only:
                raise ValueError(f"batch size of {m!r}: only {list(speed_only)} batch sizes leave the features "
                                 "unchanged, so only those may be set beside a recipe")
        parts = {m: dataclasses.replace(getattr(self, m), batch_size=b) for m, b in batch_sizes.items() if b is not None}
        return dataclasses.replace(self, **parts)

    # TRIBE v2 ----------------------------------------------------------------------------------------
    @classmethod
    def tribev2_release(cls, **run) -> "ExtractConfig":
        """The released TRIBE v2's recipe (its config.yaml, TRIBEV2_SPEC D.2): layers [0.5, 0.75, 1.0] grouped
        by mean into 2, 20 states kept first for text and video, token mean, text in batches of 4."""
        groups = dict(layers=(0.5, 0.75, 1.0), aggregation="group_mean")
        return cls(text=TextConfig(model_id="meta-llama/Llama-3.2-3B", cache_n_layers=20, batch_size=4, **groups),
                   audio=AudioConfig(model_id="facebook/w2v-bert-2.0", **groups),
                   video=VideoConfig(model_id="facebook/vjepa2-vitg-fpc64-256", cache_n_layers=20, clip_s=4.0,
                                     **groups), **run)

    @classmethod
    def from_tribev2_config(cls, path, **run) -> "ExtractConfig":
        """The extraction recipe of a TRIBE v2 ``config.yaml`` (a release directory or the file itself)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected TRIBE v2's config.yaml")
        return cls.from_tribev2_dict(load_plain_yaml(path), source=str(path), **run)

    @classmethod
    def from_tribev2_dict(cls, doc: Mapping, source: str = "config.yaml", **run) -> "ExtractConfig":
        data = doc.get("data") if isinstance(doc, Mapping) else None
        if not isinstance(data, Mapping):
            raise RecipeError(f"{source}: no 'data' section; expected TRIBE v2's experiment config")
        mods = data.get("features_to_use") or list(MODALITIES)
        if isinstance(mods, str):
            mods = [mods]
        if not isinstance(mods, (list, tuple)) or not all(isinstance(m, str) for m in mods):
            raise RecipeError(f"{source}: field data.features_to_use is {mods!r}; expected a list of {MODALITIES}")
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown:  # a misspelt name would drop that modality without a word
            raise RecipeError(f"{source}: field data.features_to_use names {unknown[0]!r}; expected some of "
                              f"{MODALITIES}")
        if data.get("frequency", 2) not in (2, 2.0):
            raise RecipeError(f"{source}: field data.frequency is {data['frequency']!r}; features are stored at 2 Hz")
        if data.get("n_layers_to_use") is not None:
            raise RecipeError(f"{source}: field data.n_layers_to_use is set ({data['n_layers_to_use']!r}); "
                              "only layers_to_use is supported")
        override = {}
        if data.get("layers_to_use") is not None:  # TRIBE's Data overwrites every extractor's layers
            override["layers"] = data["layers_to_use"]
        if data.get("layer_aggregation") is not None:
            override["layer_aggregation"] = data["layer_aggregation"]
        parts = {}
        for m in mods:
            section = data.get(f"{m}_feature")
            if not isinstance(section, Mapping):
                raise RecipeError(f"{source}: field data.{m}_feature is missing or not a mapping")
            parts[m] = _READERS[m](section, override, f"{source}: data.{m}_feature")
        return cls(**parts, modalities=tuple(mods), **run)


def _take(section: Mapping, where: str, known: dict) -> dict:
    """Checks a TRIBE extractor section: every field is run-only, read (``known``: name -> our field or None
    when only validated), or an error naming it."""
    unknown = sorted(set(section) - set(known) - _RUN_ONLY)
    if unknown:
        raise RecipeError(f"{where}.{unknown[0]}: a setting this extractor does not reproduce")
    return {ours: section[k] for k, ours in known.items() if ours and k in section}


def _require(section: Mapping, where: str, field: str, allowed) -> None:
    if field in section and section[field] not in allowed:
        raise RecipeError(f"{where}.{field} is {section[field]!r}; supported: {allowed}")


def _layers(kw: dict, override: Mapping, where: str) -> dict:
    kw.update({{"layers": "layers", "layer_aggregation": "aggregation"}[k]: v for k, v in override.items()})
    layers = kw.get("layers")
    if layers == "all" or layers is None and "layers" in kw:
        raise RecipeError(f"{where}.layers is {layers!r}; expected a fraction or a list of fractions")
    if isinstance(layers, (int, float)):
        kw["layers"] = (float(layers),)
    if "aggregation" in kw and kw["aggregation"] is None:
        kw["aggregation"] = "cat"
    return kw


def _common(section, where):
    _require(section, where, "aggregation", ("sum",))
    _require(section, where, "frequency", (2, 2.0))
    _require(section, where, "cache_all_layers", (False,))
    _require(section, where, "pretrained", (True,))


def _read_text(section, override, where) -> TextConfig:
    _common(section, where)
    _require(section, where, "event_types", ("Word",))
    _require(section, where, "token_aggregation", ("mean", "sum", "max", "first", "last"))
    kw = _take(section, where, {"model_name": "model_id", "layers": "layers", "layer_aggregation": "aggregation",
                                "cache_n_layers": "cache_n_layers", "token_aggregation": "token_aggregation",
                                "batch_size": "batch_size", "contextualized": "contextualized",
                                "event_types": None, "aggregation": None, "frequency": None,
                                "cache_all_layers": None, "pretrained": None})
    return _config("text", _layers(kw, override, where), where)


def _read_audio(section, override, where) -> AudioConfig:
    _common(section, where)
    _require(section, where, "event_types", ("Audio",))
    _require(section, where, "normalized", (True,))
    _require(section, where, "layer_type", ("transformer",))
    # cache_n_layers and token_aggregation: read, and without effect -- the release's audio path never
    # subselects states nor aggregates tokens (kept on purpose)
    kw = _take(section, where, {"model_name": "model_id", "layers": "layers", "layer_aggregation": "aggregation",
                                "norm_audio": "norm_audio", "cache_n_layers": None, "token_aggregation": None,
                                "event_types": None, "aggregation": None, "frequency": None,
                                "cache_all_layers": None, "pretrained": None, "normalized": None,
                                "layer_type": None})
    return _config("audio", _layers(kw, override, where), where)


def _read_video(section, override, where) -> VideoConfig:
    _common(section, where)
    _require(section, where, "event_types", ("Video",))
    _require(section, where, "layer_type", ("",))
    # use_audio: only multimodal video models read the sound; V-JEPA 2 does not
    kw = _take(section, where, {"clip_duration": "clip_s", "max_imsize": "max_imsize", "num_frames": "frames_per_clip",
                                "image": None, "event_types": None, "aggregation": None, "frequency": None,
                                "layer_type": None, "use_audio": None})
    if kw.get("clip_s") is None:
        kw["clip_s"] = 0.5  # one 2 Hz step, the release's default
    if kw.get("max_imsize") is None:
        kw.pop("max_imsize", None)
    image = section.get("image")
    if not isinstance(image, Mapping):
        raise RecipeError(f"{where}.image is missing or not a mapping")
    iwhere = where + ".image"
    _require(image, iwhere, "cache_all_layers", (False,))
    _require(image, iwhere, "pretrained", (True,))
    _require(image, iwhere, "token_aggregation", ("mean", "sum", "max", "first", "last"))
    # imsize / batch_size / aggregation / frequency / event_types of the inner image extractor are not
    # used on the video-model path
    kw.update(_take(image, iwhere, {"model_name": "model_id", "layers": "layers", "layer_aggregation": "aggregation",
                                    "cache_n_layers": "cache_n_layers", "token_aggregation": "token_aggregation",
                                    "cache_all_layers": None, "pretrained": None, "imsize": None,
                                    "batch_size": None, "event_types": None, "aggregation": None,
                                    "frequency": None}))
    return _config("video", _layers(kw, override, iwhere), where)


_READERS = {"text": _read_text, "audio": _read_audio, "video": _read_video}
