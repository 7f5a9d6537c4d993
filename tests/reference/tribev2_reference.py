"""An independent PyTorch reference of the TRIBE v2 forward pass, for parity tests and benchmarks.

Written from the published description of the model; the transformer is the real `x_transformers.Encoder`
(version 1.27.20, as TRIBE v2 pins). Module names reproduce the release's state-dict keys, so
`write_release` produces a directory in the release format (config.yaml + best.ckpt).
"""

from __future__ import annotations

import os

import torch
import yaml
from torch import nn
from x_transformers import Encoder


def torchvision_style_mlp(d_in, hidden_sizes, d_out, norm, act):
    """Linear when hidden_sizes is empty; else (Linear, [LayerNorm], act, Dropout)* then Linear, Dropout."""
    if not hidden_sizes:
        return nn.Linear(d_in, d_out)
    layers, prev = [], d_in
    for h in hidden_sizes:
        layers.append(nn.Linear(prev, h))
        if norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append({"gelu": nn.GELU, "relu": nn.ReLU, None: nn.Identity}[act]())
        layers.append(nn.Dropout(0.0))
        prev = h
    layers += [nn.Linear(prev, d_out), nn.Dropout(0.0)]
    return nn.Sequential(*layers)


class ReferenceSubjectLayers(nn.Module):
    def __init__(self, d_in, d_out, n_subjects, subject_dropout, average_subjects):
        super().__init__()
        rows = n_subjects + 1 if subject_dropout else n_subjects
        self.weights = nn.Parameter(torch.randn(rows, d_in, d_out) / d_in**0.5)
        self.bias = nn.Parameter(torch.randn(rows, d_out) / d_in**0.5)
        self.n_subjects, self.average_subjects = n_subjects, average_subjects

    def forward(self, x, subject_id):  # x (B, C, T) -> (B, D, T)
        if self.average_subjects or subject_id is None:
            return torch.einsum("bct,cd->bdt", x, self.weights[self.n_subjects]) + self.bias[self.n_subjects][None, :, None]
        w = self.weights.index_select(0, subject_id)
        return torch.einsum("bct,bcd->bdt", x, w) + self.bias.index_select(0, subject_id)[:, :, None]


class ReferenceFmriEncoder(nn.Module):
    """Takes TRIBE's batch layout: {modality: (B, L, D, T)} and returns (B, n_outputs, n_output_timesteps)."""

    def __init__(self, brain: dict, feature_dims: dict, n_outputs: int, n_output_timesteps: int):
        super().__init__()
        self.brain, self.feature_dims = brain, feature_dims
        hidden, n_mod = brain["hidden"], len(feature_dims)
        cat = brain["extractor_aggregation"] == "cat"
        self.proj_out = hidden // n_mod if cat else hidden
        proj = brain["projector"]
        self.projectors = nn.ModuleDict()
        for m, (n_layers, dim) in feature_dims.items():
            d_in = n_layers * dim if brain["layer_aggregation"] == "cat" else dim
            self.projectors[m] = torchvision_style_mlp(d_in, proj.get("hidden_sizes"), self.proj_out,
                                                       proj.get("norm_layer"), proj.get("activation_layer"))
        comb = brain.get("combiner")
        if comb is not None:
            self.combiner = torchvision_style_mlp(self.proj_out * n_mod if cat else hidden, comb.get("hidden_sizes"),
                                                  hidden, comb.get("norm_layer"), comb.get("activation_layer"))
        else:
            self.combiner = nn.Identity()
        low_rank = brain.get("low_rank_head")
        if low_rank is not None:
            self.low_rank_head = nn.Linear(hidden, low_rank, bias=False)
        sl = brain["subject_layers"]
        self.predictor = ReferenceSubjectLayers(low_rank or hidden, n_outputs, sl["n_subjects"],
                                                sl.get("subject_dropout"), sl.get("average_subjects", False))
        if brain.get("time_pos_embedding", True):
            self.time_pos_embed = nn.Parameter(torch.randn(1, brain["max_seq_len"], hidden))
        enc = brain["encoder"]
        self.encoder = Encoder(dim=hidden, depth=enc["depth"], heads=enc["heads"], attn_dim_head=hidden // enc["heads"],
                               ff_mult=enc["ff_mult"], use_scalenorm=True, rotary_pos_emb=True, scale_residual=True,
                               attn_dropout=0.0, ff_dropout=0.0, attn_flash=False)
        self.pooler = nn.AdaptiveAvgPool1d(n_output_timesteps)

    def forward(self, data: dict, subject_id=None, return_attention=False):
        first = next(m for m in data if m in self.feature_dims)
        b, t = data[first].shape[0], data[first].shape[-1]
        blocks = []
        for m in self.feature_dims:
            if m not in data:
                blocks.append(torch.zeros(b, t, self.proj_out))
                continue
            x = data[m].to(torch.float32)
            if self.brain["layer_aggregation"] == "cat":
                x = x.reshape(b, -1, t)  # (B, L*D, T), layer-major
            else:
                x = x.mean(dim=1)
            blocks.append(self.projectors[m](x.transpose(1, 2)))
        agg = self.brain["extractor_aggregation"]
        x = torch.cat(blocks, dim=-1) if agg == "cat" else torch.cat(blocks, dim=1) if agg == "stack" else sum(blocks)
        x = self.combiner(x)
        if hasattr(self, "time_pos_embed"):
            x = x + self.time_pos_embed[:, : x.shape[1]]
        x, inter = self.encoder(x, return_hiddens=True)
        if hasattr(self, "low_rank_head"):
            x = self.low_rank_head(x)
        out = self.pooler(self.predictor(x.transpose(1, 2), subject_id))
        if return_attention:
            return out, [a.post_softmax_attn for a in inter.attn_intermediates]
        return out


def brain_config(hidden=1152, depth=8, heads=8, low_rank_head=2048, n_subjects=25, subject_dropout=0.1,
                 extractor_aggregation="cat", layer_aggregation="cat", projector_hidden=None, combiner=None,
                 max_seq_len=1024):
    """A TRIBE-style `brain_model_config` dict (released values by default)."""
    return {
        "name": "FmriEncoder",
        "projector": {"name": "Mlp", "input_size": None, "hidden_sizes": projector_hidden, "norm_layer": "layer",
                      "activation_layer": "gelu", "bias": True, "dropout": 0.0},
        "combiner": combiner,
        "encoder": {"name": "TransformerEncoder", "heads": heads, "depth": depth, "cross_attend": False,
                    "causal": False, "attn_flash": False, "attn_dropout": 0.0, "ff_mult": 4, "ff_dropout": 0.0,
                    "use_scalenorm": True, "use_rmsnorm": False, "rel_pos_bias": False, "alibi_pos_bias": False,
                    "rotary_pos_emb": True, "rotary_xpos": False, "residual_attn": False, "scale_residual": True,
                    "layer_dropout": 0.0},
        "time_pos_embedding": True,
        "subject_embedding": False,
        "subject_layers": {"name": "SubjectLayers", "n_subjects": n_subjects, "bias": True, "init_id": False,
                           "mode": "gather", "subject_dropout": subject_dropout, "average_subjects": False},
        "hidden": hidden,
        "max_seq_len": max_seq_len,
        "dropout": 0.0,
        "extractor_aggregation": extractor_aggregation,
        "layer_aggregation": layer_aggregation,
        "linear_baseline": False,
        "modality_dropout": 0.3,
        "temporal_dropout": 0.0,
        "low_rank_head": low_rank_head,
        "temporal_smoothing": None,
    }


def write_release(directory, model: ReferenceFmriEncoder, brain: dict, n_outputs: int, n_output_timesteps: int,
                  extra_ckpt: dict | None = None, data: dict | None = None):
    """Writes config.yaml + best.ckpt as the release does (Lightning-style keys, `model.` prefix)."""
    os.makedirs(directory, exist_ok=True)
    experiment = {
        "infra": {"workdir": None, "folder": str(directory)},
        "data": {"features_to_use": list(model.feature_dims), "layers_to_use": (0.5, 0.75, 1.0),
                 "layer_aggregation": "group_mean", "frequency": 2, "duration_trs": 100, **(data or {})},
        "seed": 33,
        "brain_model_config": brain,
        "average_subjects": False,
        "n_epochs": 15,
    }
    with open(os.path.join(directory, "config.yaml"), "w") as f:
        # The release is dumped with python-specific tags (tuples); keep them to exercise the reader.
        yaml.dump(experiment, f, indent=4, default_flow_style=False, sort_keys=False)
    ckpt = {
        "state_dict": {"model." + k: v.detach().clone() for k, v in model.state_dict().items()},
        "model_build_args": {"feature_dims": {m: tuple(v) for m, v in model.feature_dims.items()},
                             "n_outputs": n_outputs, "n_output_timesteps": n_output_timesteps},
        "epoch": 14, "global_step": 1000, "pytorch-lightning_version": "2.5.0",
    }
    ckpt.update(extra_ckpt or {})
    torch.save(ckpt, os.path.join(directory, "best.ckpt"))
