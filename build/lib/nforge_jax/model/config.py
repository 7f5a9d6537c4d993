"""The encoder's hyper-parameters, as one frozen, JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

COMBINATIONS = ("concatenate", "sum", "stack")
LAYER_AGGREGATIONS = ("cat", "mean")
NORMS = ("layer", None)
ACTIVATIONS = ("gelu", "relu", None)
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


@dataclasses.dataclass(frozen=True)
class MlpSpec:
    """A projector or combiner: one linear layer when `hidden_sizes` is empty, else an MLP.

    The MLP is Linear -> [LayerNorm] -> activation -> (dropout) for each hidden size, then a final Linear.
    """

    hidden_sizes: tuple[int, ...] = ()
    norm: str | None = "layer"
    activation: str | None = "gelu"
    bias: bool = True

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in (self.hidden_sizes or ())))
        if self.norm not in NORMS:
            raise ConfigError(f"MlpSpec.norm: expected one of {NORMS}, got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"MlpSpec.activation: expected one of {ACTIVATIONS}, got {self.activation!r}")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to build an `FmriEncoder`.

    `feature_dims` lists (modality, n_layers, dim) in the order the modalities are combined (TRIBE v2: text,
    audio, video). Defaults are TRIBE v2's released hyper-parameters.
    """

    feature_dims: tuple[tuple[str, int, int], ...]
    n_outputs: int = 20484
    n_output_timesteps: int = 100
    hidden: int = 1152
    depth: int = 8
    heads: int = 8
    ff_mult: int = 4
    max_seq_len: int = 1024
    combination: str = "concatenate"
    layer_aggregation: str = "cat"
    projector: MlpSpec = MlpSpec()
    combiner: MlpSpec | None = None
    time_pos_embedding: bool = True
    low_rank_head: int | None = 2048
    n_subjects: int = 0
    # A shared "average subject" row is added when set; it is what unseen subjects use.
    subject_dropout: float | None = 0.1
    subject_bias: bool = True
    modality_dropout: float = 0.0
    dropout: float = 0.0
    rotary_base: float = 10000.0
    dtype: str = "float32"

    def __post_init__(self):
        self._check_types()
        dims = tuple((str(m), int(n), int(d)) for m, n, d in self.feature_dims)
        object.__setattr__(self, "feature_dims", dims)
        if isinstance(self.projector, dict):
            object.__setattr__(self, "projector", MlpSpec(**self.projector))
        if isinstance(self.combiner, dict):
            object.__setattr__(self, "combiner", MlpSpec(**self.combiner))
        if not dims:
            raise ConfigError("feature_dims: expected at least one (modality, n_layers, dim) entry")
        names = [m for m, _, _ in dims]
        if len(set(names)) != len(names):
            raise ConfigError(f"feature_dims: modality names must be unique, got {names}")
        for m, n, d in dims:
            if n < 1 or d < 1:
                raise ConfigError(f"feature_dims[{m!r}]: n_layers and dim must be >= 1, got ({n}, {d})")
        if self.combination not in COMBINATIONS:
            raise ConfigError(f"combination: expected one of {COMBINATIONS}, got {self.combination!r}")
        if self.layer_aggregation not in LAYER_AGGREGATIONS:
            raise ConfigError(
                f"layer_aggregation: expected one of {LAYER_AGGREGATIONS}, got {self.layer_aggregation!r}"
            )
        if self.combination == "concatenate" and self.combiner is None and self.hidden % len(dims):
            raise ConfigError(
                f"hidden ({self.hidden}) must be divisible by the number of modalities ({len(dims)}) "
                "when modalities are concatenated without a combiner"
            )
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.head_dim < 32:
            raise ConfigError(
                f"hidden/heads = {self.head_dim} < 32: rotary embeddings rotate max(head_dim/2, 32) dims, "
                "so the head dimension must be at least 32"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")
        if self.n_subjects < 0:
            raise ConfigError(f"n_subjects: expected >= 0, got {self.n_subjects}")
        if self.n_subject_rows < 1:
            raise ConfigError("n_subjects is 0 and subject_dropout is unset: the subject head would have no rows")
        for field in ("modality_dropout", "dropout"):
            p = getattr(self, field)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{field}: expected a probability in [0, 1), got {p}")
        window = self.window_steps * (len(dims) if self.combination == "stack" else 1)
        if self.time_pos_embedding and window > self.max_seq_len:
            raise ConfigError(f"a window of {window} steps exceeds max_seq_len ({self.max_seq_len})")

    def _check_types(self):
        """Each field's type, before any arithmetic uses it (so "two" is named, not a TypeError from deep inside)."""
        def is_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, numbers.Real) and not isinstance(v, bool)

        dims = self.feature_dims
        if not isinstance(dims, (list, tuple)) or not all(
                isinstance(t, (list, tuple)) and len(t) == 3 and isinstance(t[0], str) and is_int(t[1]) and is_int(t[2])
                for t in dims):
            raise ConfigError(f"feature_dims: expected a list of [modality, n_layers, dim] with integer sizes, "
                              f"got {dims!r}")
        for field in ("n_outputs", "n_output_timesteps", "hidden", "depth", "heads", "ff_mult", "max_seq_len"):
            value = getattr(self, field)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{field}: expected a positive integer, got {value!r}")
        if not is_int(self.n_subjects):
            raise ConfigError(f"n_subjects: expected an integer >= 0, got {self.n_subjects!r}")
        if self.low_rank_head is not None and (not is_int(self.low_rank_head) or self.low_rank_head < 1):
            raise ConfigError(f"low_rank_head: expected a positive integer or null, got {self.low_rank_head!r}")
        if self.subject_dropout is not None and not is_num(self.subject_dropout):
            raise ConfigError(f"subject_dropout: expected a number or null, got {self.subject_dropout!r}")
        for field in ("modality_dropout", "dropout", "rotary_base"):
            if not is_num(getattr(self, field)):
                raise ConfigError(f"{field}: expected a number, got {getattr(self, field)!r}")
        for field in ("time_pos_embedding", "subject_bias"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"{field}: expected true or false, got {getattr(self, field)!r}")
        for field in ("projector", "combiner"):
            value = getattr(self, field)
            if not (value is None and field == "combiner") and not isinstance(value, (MlpSpec, dict)):
                raise ConfigError(f"{field}: expected an MLP spec (hidden_sizes, norm, activation, bias), got {value!r}")

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, _, _ in self.feature_dims)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def rotary_dim(self) -> int:
        return max(self.head_dim // 2, 32)

    @property
    def projector_out(self) -> int:
        return self.hidden // len(self.feature_dims) if self.combination == "concatenate" else self.hidden

    @property
    def combined_dim(self) -> int:
        return self.projector_out * len(self.feature_dims) if self.combination == "concatenate" else self.hidden

    @property
    def bottleneck(self) -> int:
        return self.low_rank_head if self.low_rank_head is not None else self.hidden

    @property
    def n_subject_rows(self) -> int:
        return self.n_subjects + 1 if self.subject_dropout else self.n_subjects

    @property
    def has_average_subject(self) -> bool:
        return bool(self.subject_dropout)

    @property
    def window_steps(self) -> int:
        """Feature steps in one window: features at 2 Hz, outputs at 1 Hz."""
        return 2 * self.n_output_timesteps

    def input_dim(self, modality: str) -> int:
        for m, n, d in self.feature_dims:
            if m == modality:
                return n * d if self.layer_aggregation == "cat" else d
        raise KeyError(modality)

    # Serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["feature_dims"] = [list(t) for t in self.feature_dims]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "EncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model config field(s) {unknown}; known fields: {sorted(known)}")
        data = dict(data)
        for key in ("projector", "combiner"):
            if isinstance(data.get(key), dict):
                spec = dict(data[key])
                spec["hidden_sizes"] = tuple(spec.get("hidden_sizes") or ())
                data[key] = MlpSpec(**spec)
        if "feature_dims" not in data:
            raise ConfigError(f"{source}: missing required field 'feature_dims'")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
