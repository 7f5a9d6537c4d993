"""BIDS file names and fmriprep derivative folders.

``find_fmriprep_run`` lists the files of one run in an fmriprep ``func`` folder and sorts them by output
space, as neuralset's fmriprep finder does: ``.gii`` files are the left/right hemispheres (``hemi-L/R``),
a name containing ``mask`` is the brain mask, one containing ``preproc_bold`` the data; other derivatives
(boldref, dseg, confounds, CIFTI ``.dtseries.nii``, JSON sidecars) are ignored. Unlike a filename glob it
matches the run's entities exactly, so ``task-wheretheressmoke`` (no run) does not pick up ``_run-2`` files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["parse_entities", "FmriprepRun", "find_fmriprep_run", "choose_space", "choose_volume_space",
           "SURFACE_SPACES"]

_ENTITY = re.compile(r"^([A-Za-z]+)-(.+)$")
# Preference order when a run offers several spaces and the target is fsaverage5 (neuralset 0.0.2).
SURFACE_SPACES = ("fsaverage5", "fsaverage6", "fsaverage7", "fsaverage")
VOLUME_SPACE = "MNI152NLin2009cAsym"


def parse_entities(name: str) -> tuple[dict[str, str], str, str]:
    """``sub-01_ses-2_task-x_space-MNI_desc-preproc_bold.nii.gz`` -> (entities, suffix, extension).

    Entities are the ``key-value`` fields in order; the suffix is the last ``_`` field without a dash
    (``bold``); the extension is everything from the first dot of that field (``.nii.gz``).
    """
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    entities: dict[str, str] = {}
    suffix = ""
    for part in parts:
        m = _ENTITY.match(part)
        if m:
            entities[m.group(1)] = m.group(2)
        else:
            suffix = part
    return entities, suffix, (dot + ext) if dot else ""


@dataclass
class FmriprepRun:
    """The usable files of one run, by space: ``{space: {"data"|"mask"|"left"|"right": Path}}``."""

    folder: Path
    spaces: dict[str, dict[str, Path]] = field(default_factory=dict)


def find_fmriprep_run(folder: Path, match: dict[str, str | None]) -> FmriprepRun:
    """Files in ``folder`` whose entities equal ``match`` (a ``None`` value means: entity absent).

    Raises ``ValueError`` when one space offers two files for the same part (the run is ambiguous).
    """
    folder = Path(folder)
    run = FmriprepRun(folder=folder)
    if not folder.is_dir():
        return run
    for path in sorted(folder.iterdir()):
        name = path.name
        if not (name.endswith(".nii.gz") or name.endswith(".nii") or name.endswith(".gii")):
            continue
        if name.endswith(".dtseries.nii"):
            continue
        ents, _suffix, _ext = parse_entities(name)
        if any(ents.get(k) != (None if v is None else str(v)) for k, v in match.items()):
            continue
        space = ents.get("space")
        if space is None:
            continue
        if name.endswith(".gii"):
            hemi = ents.get("hemi")
            part = {"L": "left", "R": "right"}.get(hemi or "")
            if part is None:
                continue
        elif "mask" in name:
            part = "mask"
        elif "preproc_bold" in name:
            part = "data"
        else:
            continue
        parts = run.spaces.setdefault(space, {})
        if part in parts:
            raise ValueError(f"{folder}: two '{part}' files for space {space} match {match}: "
                             f"{parts[part].name} and {name}")
        parts[part] = path
    return run


def choose_space(run: FmriprepRun) -> tuple[str, dict[str, Path]] | None:
    """The space TRIBE reads for an fsaverage5 target: fsaverage5/6/7/fsaverage surfaces (both hemispheres)
    first, then the ``MNI152NLin2009cAsym`` volume, then any other MNI volume; ``None`` if nothing usable."""
    for space in SURFACE_SPACES:
        parts = run.spaces.get(space, {})
        if "left" in parts and "right" in parts:
            return space, parts
    return choose_volume_space(run)


def choose_volume_space(run: FmriprepRun) -> tuple[str, dict[str, Path]] | None:
    """The MNI volume TRIBE reads for a voxel projection (``MaskProjector``): ``MNI152NLin2009cAsym``, then any
    other space containing "MNI" (e.g. ``MNI152NLin6Asym``); ``None`` if the run has no MNI volume."""
    candidates = [VOLUME_SPACE] + sorted(s for s in run.spaces if "MNI" in s and s != VOLUME_SPACE)
    for space in candidates:
        parts = run.spaces.get(space, {})
        if "data" in parts:
            return space, parts
    return None
