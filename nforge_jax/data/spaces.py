"""Output spaces: what the columns of fMRI targets, model outputs and predictions are.

* ``fsaverage5``: the cortical surface, 20,484 vertices (left hemisphere first; `data.fsaverage`).
* ``subcortical``: TRIBE v2's subcortical voxels on the 2 mm MNI grid (`data.subcortical`), identified by the
  grid's shape, affine and a digest of its voxel list, so that two grids with other voxels (FSL's exact atlas vs
  the offline rebuild) never pass for one another.
* ``unspecified``: a store or model that names no space (older files, tests' toy data): only the number of
  outputs is known and compared. A store whose fMRI has 20,484 columns and names no space is ``fsaverage5``.

Stores record a timeline's space in its meta (``meta["space"]``, :meth:`OutputSpace.to_dict`); checkpoints,
prediction directories and evaluation outputs record the same dict. Every entry point that pairs two of them
calls :func:`check_same_space`, which raises :class:`SpaceMismatch` (a ValueError) with one line that names
both sides.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping

import numpy as np

__all__ = ["FSAVERAGE5", "SUBCORTICAL", "UNSPECIFIED", "SPACES", "OutputSpace", "SpaceMismatch", "fsaverage5_space",
           "subcortical_space", "space_of", "space_of_meta", "check_same_space"]

FSAVERAGE5, SUBCORTICAL, UNSPECIFIED = "fsaverage5", "subcortical", "unspecified"
SPACES = (FSAVERAGE5, SUBCORTICAL, UNSPECIFIED)
_N_FSAVERAGE5 = 20484


class SpaceMismatch(ValueError):
    """Two things of different output spaces were paired (a store and a model, predictions and a store...)."""


@dataclasses.dataclass(frozen=True)
class OutputSpace:
    """name: one of :data:`SPACES`; n_outputs: columns; grid: for volumes, {"shape", "affine", "voxels_sha256",
    "exact", "source"} (only shape, affine and the voxel digest take part in comparisons)."""

    name: str
    n_outputs: int
    grid: Mapping | None = None

    def __post_init__(self):
        if self.name not in SPACES:
            raise ValueError(f"space: expected one of {', '.join(SPACES)}, got {self.name!r}")
        if isinstance(self.n_outputs, bool) or not isinstance(self.n_outputs, (int, np.integer)) or self.n_outputs < 1:
            raise ValueError(f"space {self.name}: n_outputs must be a positive int, got {self.n_outputs!r}")
        if self.name == FSAVERAGE5 and self.n_outputs != _N_FSAVERAGE5:
            raise ValueError(f"space fsaverage5: has {_N_FSAVERAGE5} vertices, got n_outputs={self.n_outputs}")
        if self.name == SUBCORTICAL and not self.grid:
            raise ValueError("space subcortical: the grid (shape, affine, voxels_sha256) is missing")

    @property
    def unit(self) -> str:
        return "vertices" if self.name == FSAVERAGE5 else "voxels" if self.name == SUBCORTICAL else "outputs"

    def describe(self) -> str:
        """e.g. "fsaverage5 (20,484 vertices)", "subcortical (8,803 voxels, offline Harvard-Oxford rebuild)"."""
        text = f"{self.name} ({self.n_outputs:,} {self.unit}"
        if self.grid is not None and "exact" in self.grid:
            text += ", FSL Harvard-Oxford atlas" if self.grid["exact"] else ", offline Harvard-Oxford rebuild"
        return text + ")"

    def key(self) -> tuple:
        """What two spaces must share to be the same."""
        grid = None
        if self.grid is not None:
            grid = (tuple(int(x) for x in self.grid["shape"]),
                    tuple(round(float(x), 6) for x in np.asarray(self.grid["affine"], float).ravel()),
                    str(self.grid["voxels_sha256"]))
        return self.name, int(self.n_outputs), grid

    def to_dict(self) -> dict:
        out = {"name": self.name, "n_outputs": int(self.n_outputs)}
        if self.grid is not None:
            out["grid"] = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in self.grid.items()}
        return out

    @classmethod
    def from_dict(cls, d, where: str = "space") -> "OutputSpace":
        if isinstance(d, str):  # a bare name: only fsaverage5 is fully described by it
            if d != FSAVERAGE5:
                raise ValueError(f"{where}: {d!r} alone does not describe a space; expected a dict with name, "
                                 "n_outputs (and grid for volumes)")
            return fsaverage5_space()
        if not isinstance(d, Mapping) or "name" not in d or "n_outputs" not in d:
            raise ValueError(f"{where}: expected a dict with 'name' and 'n_outputs', got {d!r}")
        unknown = set(d) - {"name", "n_outputs", "grid"}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}; expected name, n_outputs, grid")
        try:
            return cls(name=d["name"], n_outputs=d["n_outputs"], grid=d.get("grid"))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None


def fsaverage5_space() -> OutputSpace:
    return OutputSpace(FSAVERAGE5, _N_FSAVERAGE5)


def subcortical_space(grid) -> OutputSpace:
    """The space of a `data.subcortical.SubcorticalGrid`."""
    ijk = np.ascontiguousarray(np.asarray(grid.ijk, np.int64))
    return OutputSpace(SUBCORTICAL, int(grid.n_voxels), {
        "shape": [int(x) for x in grid.shape], "affine": np.asarray(grid.affine, float).tolist(),
        "voxels_sha256": hashlib.sha256(ijk.tobytes()).hexdigest(), "exact": bool(grid.exact),
        "source": str(grid.source)})


def space_of(d, n_outputs: int | None = None, where: str = "space") -> OutputSpace:
    """The space a record names (``d``: a dict, a name, or None for a record that names none); with no space
    named, ``fsaverage5`` for 20,484 outputs, else ``unspecified`` with ``n_outputs``."""
    if isinstance(d, str) and d not in SPACES:
        d = None  # study stores written before spaces were recorded kept the BOLD's source space here
    if d is not None:
        space = OutputSpace.from_dict(d, where)
        if n_outputs is not None and int(n_outputs) != space.n_outputs:
            raise SpaceMismatch(f"{where}: names {space.describe()} but holds {int(n_outputs):,} columns")
        return space
    if n_outputs is None:
        raise ValueError(f"{where}: names no output space and its number of outputs is unknown")
    return fsaverage5_space() if int(n_outputs) == _N_FSAVERAGE5 else OutputSpace(UNSPECIFIED, int(n_outputs))


def space_of_meta(meta: Mapping, n_outputs: int | None = None, where: str = "timeline") -> OutputSpace:
    """A store timeline's space: ``meta["space"]``, else inferred from ``n_outputs`` (its fMRI columns)."""
    return space_of(meta.get("space"), n_outputs, f"{where} (meta space)")


def check_same_space(expected: OutputSpace, got: OutputSpace, *, expected_what: str, got_what: str) -> None:
    """Raise SpaceMismatch unless the two are one space. ``unspecified`` matches anything with as many outputs."""
    if expected.key() == got.key():
        return
    if UNSPECIFIED in (expected.name, got.name) and expected.n_outputs == got.n_outputs:
        return
    detail = ""
    if expected.name == got.name == SUBCORTICAL and expected.n_outputs == got.n_outputs:
        detail = " (same voxel count, other voxels: grids from different atlas files)"
    raise SpaceMismatch(f"{got_what} is {got.describe()} but {expected_what} is {expected.describe()}{detail}")
