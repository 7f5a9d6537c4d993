"""TRIBE v2 release (config.yaml + best.ckpt) <-> nforge_jax encoder checkpoint.

Reading never unpickles arbitrary objects: `best.ckpt` is opened with `torch.load(weights_only=True)`, which
accepts only tensors and plain containers, and `config.yaml` with a YAML loader that turns Python-specific
tags into plain data instead of constructing objects. Every key and shape is checked against the config
before anything is written, and output directories appear atomically.
"""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import yaml

from nforge_jax.data.plain_yaml import load_plain_yaml
from nforge_jax.data.spaces import FSAVERAGE5, SUBCORTICAL, OutputSpace, fsaverage5_space, space_of
from nforge_jax.model.checkpoint import (CheckpointError, encoder_arrays, encoder_from_arrays, load_encoder,
                                         make_sibling_dir, remove_stale_siblings, save_encoder, write_failed)
from nforge_jax.model.config import ConfigError, EncoderConfig, MlpSpec

CONFIG_FILE = "config.yaml"
CKPT_FILE = "best.ckpt"
ORIGINAL_CONFIG = "tribev2_config.yaml"  # kept verbatim inside our checkpoint for the way back

ENCODER_FLAGS_REQUIRED = {  # x-transformers options TRIBE v2 uses; anything else changes the function
    "use_scalenorm": True, "rotary_pos_emb": True, "scale_residual": True, "use_rmsnorm": False,
    "cross_attend": False, "causal": False, "rel_pos_bias": False, "alibi_pos_bias": False,
    "rotary_xpos": False, "residual_attn": False,
}


_REQUIRED = object()
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _typed(section: dict, field: str, kind: str, where: str, default=_REQUIRED, nullable: bool = False):
    """section[field] checked to be of `kind` ("int", "float", "bool"); CheckpointError naming the field."""
    if not isinstance(section, dict):
        raise CheckpointError(f"{where} is {section!r}, expected a mapping")
    if field not in section and default is _REQUIRED:
        raise CheckpointError(f"{where}.{field}: missing, expected {_KINDS[kind]}")
    value = section.get(field, default)
    if value is None and nullable:
        return None
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v),
          "bool": lambda v: isinstance(v, bool)}[kind](value)
    if not ok:
        raise CheckpointError(f"{where}.{field} is {value!r}, expected {_KINDS[kind]}{' or null' if nullable else ''}")
    return float(value) if kind == "float" else value


def load_release_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a TRIBE v2 release directory holds {CONFIG_FILE} and {CKPT_FILE}")
    try:
        doc = load_plain_yaml(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("brain_model_config"), dict):
        raise CheckpointError(f"{path}: expected a mapping with a 'brain_model_config' section")
    return doc


def read_release_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict without the 'model.' prefix as numpy arrays, model_build_args)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a TRIBE v2 release directory holds {CONFIG_FILE} and {CKPT_FILE}")
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading a TRIBE v2 checkpoint needs PyTorch: pip install 'nforge_jax[extract]'") from None
    expected = "a PyTorch checkpoint written by torch.save holding 'state_dict' and 'model_build_args'"
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); expected {expected}")
    try:
        # Memory-mapped when it is the zip format; files of the legacy (pre-1.6) format cannot be mapped.
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # truncated zip, pickle with code, not a torch file...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it contains pickled Python objects other than tensors and plain containers; refusing to load"
        raise CheckpointError(f"{path}: cannot be read safely ({reason}); expected {expected}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(ckpt).__name__}")
    for key in ("state_dict", "model_build_args"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: missing top-level key {key!r} (found {sorted(map(str, ckpt))})")
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path}: field 'state_dict' is a {type(ckpt['state_dict']).__name__}, expected a "
                              "mapping of parameter names to tensors")
    if not isinstance(ckpt["model_build_args"], dict):
        raise CheckpointError(f"{path}: field 'model_build_args' is a {type(ckpt['model_build_args']).__name__}, "
                              "expected a mapping with feature_dims, n_outputs and n_output_timesteps")
    state = {}
    for key, value in ckpt["state_dict"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict[{key!r}] is a {type(value).__name__}, expected a tensor")
        state[str(key).removeprefix("model.")] = value.detach().to(torch.float32).numpy()
    return state, ckpt["model_build_args"]


def _mlp_spec(section: dict | None, where: str) -> MlpSpec | None:
    if section is None:
        return None
    norm = section.get("norm_layer")
    act = section.get("activation_layer")
    if norm not in ("layer", None) or act not in ("gelu", "relu", None):
        raise ConfigError(f"{where}: norm_layer {norm!r} / activation_layer {act!r} are not supported "
                          "(supported: norm 'layer' or null; activation 'gelu', 'relu' or null)")
    sizes = section.get("hidden_sizes") or []
    if not isinstance(sizes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in sizes):
        raise CheckpointError(f"{where}.hidden_sizes is {sizes!r}, expected a list of integers or null")
    return MlpSpec(hidden_sizes=tuple(sizes), norm=norm, activation=act,
                   bias=_typed(section, "bias", "bool", where, default=True))


def encoder_config_from_release(brain: dict, build_args: dict, predictor_rows: int, source: str) -> EncoderConfig:
    """Maps TRIBE's `brain_model_config` + `model_build_args` to an EncoderConfig; refuses what we do not support."""
    where = f"{source} brain_model_config"

    def unsupported(field, value, expected):
        raise CheckpointError(f"{where}.{field} = {value!r} is not supported (expected {expected})")

    for field, expected in (("subject_embedding", False), ("linear_baseline", False)):
        if _typed(brain, field, "bool", where, default=expected) != expected:
            unsupported(field, brain.get(field), expected)
    if brain.get("temporal_smoothing") is not None:
        unsupported("temporal_smoothing", brain["temporal_smoothing"], None)
    if (_typed(brain, "temporal_dropout", "float", where, default=0.0, nullable=True) or 0.0) != 0.0:
        unsupported("temporal_dropout", brain["temporal_dropout"], 0.0)
    enc = brain.get("encoder")
    if not isinstance(enc, dict):
        unsupported("encoder", enc, "a TransformerEncoder section")
    for flag, expected in ENCODER_FLAGS_REQUIRED.items():
        if flag in enc and _typed(enc, flag, "bool", f"{where}.encoder") != expected:
            unsupported(f"encoder.{flag}", enc[flag], expected)
    if (_typed(enc, "layer_dropout", "float", f"{where}.encoder", default=0.0, nullable=True) or 0.0) != 0.0:
        unsupported("encoder.layer_dropout", enc["layer_dropout"], 0.0)
    aggregation = {"cat": "concatenate", "sum": "sum", "stack": "stack"}.get(brain.get("extractor_aggregation", "cat"))
    if aggregation is None:
        unsupported("extractor_aggregation", brain.get("extractor_aggregation"), "'cat', 'sum' or 'stack'")
    sl = brain.get("subject_layers") or {}
    subject_dropout = _typed(sl, "subject_dropout", "float", f"{where}.subject_layers", default=None, nullable=True)
    n_subjects = _typed(sl, "n_subjects", "int", f"{where}.subject_layers", default=0)
    if subject_dropout:
        if predictor_rows == 1:
            n_subjects = 0  # the released head keeps only the shared average-subject row
        elif predictor_rows != n_subjects + 1:
            raise CheckpointError(f"{source}: predictor.weights has {predictor_rows} subject rows; "
                                  f"subject_layers.n_subjects = {n_subjects} with subject_dropout needs "
                                  f"{n_subjects + 1} (or 1 for an average-subject-only head)")
    elif predictor_rows != n_subjects:
        raise CheckpointError(f"{source}: predictor.weights has {predictor_rows} subject rows, "
                              f"subject_layers.n_subjects is {n_subjects}")
    try:
        feature_dims = tuple((str(m), int(v[0]), int(v[1])) for m, v in build_args["feature_dims"].items())
        n_outputs = int(build_args["n_outputs"])
        n_output_timesteps = int(build_args["n_output_timesteps"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{source}: model_build_args must hold feature_dims {{modality: (n_layers, dim)}}, "
                              f"n_outputs and n_output_timesteps ({type(e).__name__}: {e})") from None
    try:
        return EncoderConfig(
            feature_dims=feature_dims, n_outputs=n_outputs, n_output_timesteps=n_output_timesteps,
            hidden=_typed(brain, "hidden", "int", where), depth=_typed(enc, "depth", "int", f"{where}.encoder"),
            heads=_typed(enc, "heads", "int", f"{where}.encoder"),
            ff_mult=_typed(enc, "ff_mult", "int", f"{where}.encoder", default=4),
            max_seq_len=_typed(brain, "max_seq_len", "int", where, default=1024),
            combination=aggregation, layer_aggregation=brain.get("layer_aggregation", "cat"),
            projector=_mlp_spec(brain.get("projector") or {}, f"{where}.projector") or MlpSpec(),
            combiner=_mlp_spec(brain.get("combiner"), f"{where}.combiner"),
            time_pos_embedding=_typed(brain, "time_pos_embedding", "bool", where, default=True),
            low_rank_head=_typed(brain, "low_rank_head", "int", where, default=None, nullable=True),
            n_subjects=n_subjects, subject_dropout=subject_dropout,
            subject_bias=_typed(sl, "bias", "bool", f"{where}.subject_layers", default=True),
            modality_dropout=_typed(brain, "modality_dropout", "float", where, default=0.0, nullable=True) or 0.0,
            dropout=_typed(brain, "dropout", "float", where, default=0.0, nullable=True) or 0.0,
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: missing field {e}") from None
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _mlp_keys(prefix_t, prefix_j, spec: MlpSpec):
    """Key pairs for a projector/combiner: a bare Linear, or torchvision-MLP numbering."""
    if not spec.hidden_sizes:
        rows = [(f"{prefix_t}.weight", f"{prefix_j}/layers/0/kernel", True)]
        if spec.bias:
            rows.append((f"{prefix_t}.bias", f"{prefix_j}/layers/0/bias", False))
        return rows
    rows, block = [], 4 if spec.norm == "layer" else 3
    for i in range(len(spec.hidden_sizes) + 1):
        idx = i * block
        rows.append((f"{prefix_t}.{idx}.weight", f"{prefix_j}/layers/{i}/kernel", True))
        if spec.bias:
            rows.append((f"{prefix_t}.{idx}.bias", f"{prefix_j}/layers/{i}/bias", False))
        if spec.norm == "layer" and i < len(spec.hidden_sizes):
            rows.append((f"{prefix_t}.{idx + 1}.weight", f"{prefix_j}/norms/{i}/scale", False))
            rows.append((f"{prefix_t}.{idx + 1}.bias", f"{prefix_j}/norms/{i}/bias", False))
    return rows


def key_table(config: EncoderConfig) -> list[tuple[str, str, bool]]:
    """(TRIBE v2 state-dict key, our parameter path, transpose?) for every tensor of the model."""
    rows = []
    if config.time_pos_embedding:
        rows.append(("time_pos_embed", "time_pos_embed", False))
    for m in config.modalities:
        rows += _mlp_keys(f"projectors.{m}", f"projectors/{m}", config.projector)
    if config.combiner is not None:
        rows += _mlp_keys("combiner", "combiner", config.combiner)
    if config.low_rank_head is not None:
        rows.append(("low_rank_head.weight", "low_rank_head/kernel", True))
    rows.append(("predictor.weights", "predictor/weights", False))
    if config.subject_bias:
        rows.append(("predictor.bias", "predictor/bias", False))
    for i in range(2 * config.depth):
        t, j = f"encoder.layers.{i}", f"encoder/sublayers/{i}"
        rows.append((f"{t}.0.0.g", f"{j}/norm/g", False))
        if i % 2 == 0:
            rows += [(f"{t}.1.to_{n}.weight", f"{j}/block/to_{n}/kernel", True) for n in ("q", "k", "v", "out")]
        else:
            rows += [(f"{t}.1.ff.0.0.weight", f"{j}/block/w1/kernel", True), (f"{t}.1.ff.0.0.bias", f"{j}/block/w1/bias", False),
                     (f"{t}.1.ff.2.weight", f"{j}/block/w2/kernel", True), (f"{t}.1.ff.2.bias", f"{j}/block/w2/bias", False)]
        rows.append((f"{t}.2.residual_scale", f"{j}/residual_scale", False))
    rows.append(("encoder.rotary_pos_emb.inv_freq", "encoder/inv_freq", False))
    rows.append(("encoder.final_norm.g", "encoder/final_norm/g", False))
    return rows


def release_to_encoder(src):
    """Reads a TRIBE v2 release directory; returns (FmriEncoder, the original config.yaml text)."""
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory; expected a TRIBE v2 release with {CONFIG_FILE} and {CKPT_FILE}")
    doc = load_release_config(src / CONFIG_FILE)
    state, build_args = read_release_checkpoint(src / CKPT_FILE)
    ckpt = src / CKPT_FILE
    if "predictor.weights" not in state:
        raise CheckpointError(f"{ckpt}: missing key 'model.predictor.weights'")
    config = encoder_config_from_release(doc["brain_model_config"], build_args,
                                         int(state["predictor.weights"].shape[0]), source=str(src / CONFIG_FILE))
    table = key_table(config)
    missing = [t for t, _, _ in table if t not in state]
    unexpected = sorted(set(state) - {t for t, _, _ in table})
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: state_dict does not match {CONFIG_FILE}: missing keys "
                              f"{['model.' + k for k in missing]}, unexpected keys {['model.' + k for k in unexpected]}")
    arrays = {}
    for t_key, j_key, transpose in table:
        arrays[j_key] = state[t_key].T if transpose else state[t_key]
    try:
        model = encoder_from_arrays(config, arrays, source=str(ckpt))
    except CheckpointError as e:  # name the TRIBE key, not ours
        reverse = {j: t for t, j, _ in table}
        msg = str(e)
        for j, t in reverse.items():
            msg = msg.replace(repr(j), repr("model." + t))
        raise CheckpointError(msg) from None
    return model, (src / CONFIG_FILE).read_text()


def release_recipe(doc: dict, source: str) -> dict | None:
    """The extraction recipe of a release config (``ExtractConfig.to_dict()`` form), or None when its
    ``data`` section describes no feature extractor (then the features are the user's to choose)."""
    from nforge_jax.extract.recipe import ExtractConfig  # light: no torch

    data = doc.get("data")
    if not isinstance(data, dict) or not any(f"{m}_feature" in data for m in ("text", "audio", "video")):
        return None
    return ExtractConfig.from_tribev2_dict(doc, source=source).to_dict()


def _release_projection(doc: dict) -> dict | None:
    """The fMRI extractor's ``projection`` section of a release config (``data.neuro.projection``), or None."""
    data = doc.get("data")
    neuro = data.get("neuro") if isinstance(data, dict) else None
    projection = neuro.get("projection") if isinstance(neuro, dict) else None
    return projection if isinstance(projection, dict) else None


def release_space(doc: dict, n_outputs: int, source: str) -> OutputSpace:
    """The output space of a release's head: its fMRI projection (``data.neuro.projection``) names it:
    ``SurfaceProjector(mesh="fsaverage5")`` the cortex, ``MaskProjector(mask="subcortical", resolution=2)`` the
    subcortical grid (which must be loadable here with as many voxels as the head has outputs). Without a
    projection, or with another one, the space is what ``n_outputs`` implies (`data.spaces.space_of`)."""
    projection = _release_projection(doc)
    where = f"{source} data.neuro.projection"
    kind = projection.get("name") if projection else None
    if kind == "MaskProjector" and projection.get("mask") == SUBCORTICAL:
        if projection.get("resolution", 2) != 2:
            raise CheckpointError(f"{where}.resolution is {projection.get('resolution')!r}; only the 2 mm "
                                  "subcortical grid is supported (resolution: 2)")
        return _subcortical_release_space(n_outputs, where)
    if kind == "SurfaceProjector" and projection.get("mesh") == FSAVERAGE5:
        if n_outputs != fsaverage5_space().n_outputs:
            raise CheckpointError(f"{where} names fsaverage5 (20,484 vertices), but the head has {n_outputs:,} "
                                  "outputs (model_build_args.n_outputs)")
        return fsaverage5_space()
    return space_of(None, n_outputs)


def _subcortical_release_space(n_outputs: int, where: str) -> OutputSpace:
    from nforge_jax.data.spaces import subcortical_space
    from nforge_jax.data.subcortical import ATLAS_ENV, FSL_ATLAS_NAME, load_grid

    try:
        grid = load_grid()
    except (OSError, ValueError) as e:  # no atlas found (AtlasNotFoundError), or a file that is not one
        raise CheckpointError(f"{where} names the subcortical grid, which cannot be loaded: "
                              f"{' '.join(str(e).split())}") from None
    if grid.n_voxels != n_outputs:
        raise CheckpointError(
            f"{where}: this subcortical checkpoint has {n_outputs:,} voxels, the subcortical grid loaded here has "
            f"{grid.n_voxels:,} ({'FSL atlas' if grid.exact else 'offline Harvard-Oxford rebuild'}, {grid.source}); "
            f"set {ATLAS_ENV} to FSL's exact {FSL_ATLAS_NAME} (the atlas the checkpoint was trained on)")
    return subcortical_space(grid)


def convert_tribev2(src, dst, *, overwrite: bool = False) -> Path:
    """`nforge convert tribev2 SRC DST`: a TRIBE v2 release directory -> an nforge_jax checkpoint that also
    records the release's extraction recipe (``metadata["extract_recipe"]``) and output space
    (``metadata["output_space"]``, from the release's fMRI projection: `release_space`)."""
    src = Path(src)
    doc = load_release_config(src / CONFIG_FILE)
    recipe = release_recipe(doc, str(src / CONFIG_FILE))
    model, original_yaml = release_to_encoder(src)
    space = release_space(doc, int(model.config.n_outputs), str(src / CONFIG_FILE))
    metadata = {"source": "tribev2", "source_path": str(src.absolute()), "output_space": space.to_dict()}
    if recipe is not None:
        metadata["extract_recipe"] = recipe
    return save_encoder(model, dst, overwrite=overwrite, metadata=metadata,
                        extra_files={ORIGINAL_CONFIG: original_yaml.encode()})


def release_brain_config(config: EncoderConfig) -> dict:
    """A TRIBE-style brain_model_config for a model that did not come from a release."""
    def mlp(spec):
        return None if spec is None else {"name": "Mlp", "input_size": None, "hidden_sizes": list(spec.hidden_sizes) or None,
                                          "norm_layer": spec.norm, "activation_layer": spec.activation,
                                          "bias": spec.bias, "dropout": config.dropout}
    flags = dict(ENCODER_FLAGS_REQUIRED, heads=config.heads, depth=config.depth, ff_mult=config.ff_mult,
                 attn_flash=False, attn_dropout=config.dropout, ff_dropout=config.dropout, layer_dropout=0.0)
    return {
        "name": "FmriEncoder", "projector": mlp(config.projector), "combiner": mlp(config.combiner),
        "encoder": {"name": "TransformerEncoder", **flags}, "time_pos_embedding": config.time_pos_embedding,
        "subject_embedding": False,
        "subject_layers": {"name": "SubjectLayers", "n_subjects": config.n_subjects, "bias": config.subject_bias,
                           "init_id": False, "mode": "gather", "subject_dropout": config.subject_dropout,
                           "average_subjects": False},
        "hidden": config.hidden, "max_seq_len": config.max_seq_len, "dropout": config.dropout,
        "extractor_aggregation": {"concatenate": "cat", "sum": "sum", "stack": "stack"}[config.combination],
        "layer_aggregation": config.layer_aggregation, "linear_baseline": False,
        "modality_dropout": config.modality_dropout, "temporal_dropout": 0.0,
        "low_rank_head": config.low_rank_head, "temporal_smoothing": None,
    }


def release_projection(space: OutputSpace) -> dict | None:
    """The neuralset projection that makes ``space`` (None for an unspecified one), as `release_space` reads it."""
    if space.name == SUBCORTICAL:
        return {"name": "MaskProjector", "mask": SUBCORTICAL, "resolution": 2}
    if space.name == FSAVERAGE5:
        return {"name": "SurfaceProjector", "mesh": FSAVERAGE5, "kind": "ball", "radius": 3.0}
    return None


def export_tribev2(src, dst, *, overwrite: bool = False) -> Path:
    """`nforge convert to-tribev2 SRC DST`: an nforge_jax checkpoint -> config.yaml + best.ckpt."""
    try:
        import torch
    except ImportError:
        raise CheckpointError("writing a TRIBE v2 checkpoint needs PyTorch: pip install 'nforge_jax[extract]'") from None
    src, dst = Path(src), Path(dst).absolute()
    model, metadata = load_encoder(src)
    config = model.config
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists (pass overwrite=True to replace it)")
    arrays = encoder_arrays(model)
    state = OrderedDict()
    for t_key, j_key, transpose in key_table(config):
        value = arrays[j_key].T if transpose else arrays[j_key]
        state["model." + t_key] = torch.from_numpy(np.array(value, order="C"))
    build_args = {"feature_dims": {m: (n, d) for m, n, d in config.feature_dims},
                  "n_outputs": config.n_outputs, "n_output_timesteps": config.n_output_timesteps}
    original = src / ORIGINAL_CONFIG
    if original.is_file():
        config_text = original.read_text()
    else:
        doc = {"brain_model_config": release_brain_config(config), "average_subjects": False}
        try:
            space = space_of(metadata.get("output_space"), config.n_outputs,
                             f"{src / 'config.json'} field 'metadata.output_space'")
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        projection = release_projection(space)
        if projection is not None:  # so that converting the release back finds its space
            doc["data"] = {"neuro": {"name": "FmriExtractor", "projection": projection}}
        config_text = yaml.safe_dump(doc, indent=4, default_flow_style=False, sort_keys=False)
    tmp = None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(dst)
        need = sum(v.numel() * v.element_size() for v in state.values())
        free = shutil.disk_usage(dst.parent).free
        if free < need:
            raise OSError(errno.ENOSPC, f"{need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free")
        tmp = make_sibling_dir(dst)
        (tmp / CONFIG_FILE).write_text(config_text)
        torch.save({"state_dict": state, "model_build_args": build_args}, tmp / CKPT_FILE)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except Exception as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, FileExistsError):
            raise write_failed(dst, e, "TRIBE v2 release") from None
        raise
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
