"""What every study reader shares: root resolution, timeline naming, common event columns, the count check.

A reader lists its timelines (one fMRI run each, a dict with at least ``subject``), builds the events of
a timeline (Video/Audio/Word/... rows plus one ``Fmri`` row) and the run's fMRI target at 1 Hz: on fsaverage5
by default, or on the subcortical voxel grid when the reader is given one (``grid=``, from
`data.subcortical.load_grid`; the run's MNI volume is then read, smoothed and projected as TRIBE v2's
``FmriExtractor(fwhm=6.0, projection=MaskProjector(mask="subcortical", resolution=2))`` does). Names and columns follow TRIBE v2 (neuralset 0.0.2) so that subjects and timelines line up with
its released checkpoint:

- timeline: ``"<Study>:" + ",".join(f"{k}={v}" for k, v in sorted(timeline.items()))``;
- ``subject`` column: ``"<Study>/<timeline['subject']>"``; ``study``: the study name; every other
  timeline key as ``str(value)``.

Repeated presentations: a reader whose runs show a whole stimulus again (Wen2017's segments, LeBel's
``wheretheressmoke``) names the stimulus of a run (:meth:`Study.stimulus_of`); :meth:`Study.presentations` then
numbers each subject's runs of a stimulus 1, 2, ... in timeline order, and the store meta records them as
``stimulus`` and ``repeat`` (what ``nforge evaluate`` averages and takes its repeat noise ceiling from).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np
import pandas as pd

from nforge_jax.data import timebase
from nforge_jax.data.events import make_events
from nforge_jax.data.spaces import OutputSpace, fsaverage5_space, subcortical_space

__all__ = ["Study", "StudyDataError", "MissingStudyFile", "timeline_name", "TimelineCount"]

log = logging.getLogger("nforge_jax.data.studies")


class StudyDataError(ValueError):
    """A study's files are missing, corrupt or laid out differently from the published dataset."""


class MissingStudyFile(StudyDataError, FileNotFoundError):
    """A file a timeline needs does not exist (the message names it)."""


def timeline_name(study: str, timeline: Mapping[str, Any]) -> str:
    """TRIBE's timeline string, e.g. ``Wen2017:run=1,seg=seg3,subject=subject1``."""
    return f"{study}:" + ",".join(f"{k}={timeline[k]}" for k in sorted(timeline))


class TimelineCount(dict):
    """Result of the timeline-count check: ``found``, ``expected``, ``ok``, ``message``."""


class Study:
    """Base class of the study readers.

    ``root`` may be the study folder itself (the one holding ``download/``) or a ``$DATAPATH`` that
    holds it as ``<Study>`` or ``<study lowercased>`` (TRIBE's convention), e.g. ``$DATAPATH/Wen2017``.
    ``subjects`` restricts the timelines to these subject ids (``"sub-01"``, ``1``, ``"UTS01"``... or
    the prefixed ``"<Study>/<id>"`` form). ``grid``: a `data.subcortical.SubcorticalGrid` for subcortical
    targets (read from each run's MNI volume); None for fsaverage5 targets.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    tr_s: ClassVar[float]
    expected_per_subject: ClassVar[Mapping[str, int]]  # timelines per subject in the full dataset
    offset_s: ClassVar[float] = timebase.HEMODYNAMIC_OFFSET_S  # TRIBE applies it to every fMRI recording
    subcortical_fwhm_mm: ClassVar[float] = 6.0  # TRIBE v2 smooths before the subcortical mask, not the cortex

    def __init__(self, root, subjects=None, *, grid=None):
        from nforge_jax.data.subcortical import SubcorticalGrid

        if grid is not None and not isinstance(grid, SubcorticalGrid):
            raise TypeError(f"grid: expected a SubcorticalGrid (data.subcortical.load_grid()) or None for "
                            f"fsaverage5 targets, got {type(grid).__name__}")
        self.grid = grid
        self.root = self.resolve_root(root)
        self.download = self.root / "download"
        self._subjects = None if subjects is None else {self._normalize_subject(s) for s in subjects}
        if self._subjects is not None:
            unknown = sorted(self._subjects - {str(s) for s in self.expected_per_subject})
            if unknown:
                raise StudyDataError(f"{self.name}: unknown subject(s) {unknown}; this study has "
                                     f"{list(self.expected_per_subject)}")

    # ------------------------------------------------------------------------------------------ naming
    @classmethod
    def resolve_root(cls, root) -> Path:
        root = Path(root).expanduser()
        tried = []
        for folder in (cls.name, cls.name.lower(), *cls.aliases, *(a.lower() for a in cls.aliases)):
            cand = root / folder
            tried.append(str(cand))
            if (cand / "download").is_dir():
                return cand
        if (root / "download").is_dir():
            return root
        raise MissingStudyFile(f"{cls.name}: no dataset found: expected a 'download' folder in {root} or in one "
                               f"of {tried}")

    def _normalize_subject(self, subject) -> str:
        s = str(subject)
        prefix = f"{self.name}/"
        return s[len(prefix):] if s.startswith(prefix) else s

    def wants_subject(self, subject) -> bool:
        return self._subjects is None or str(subject) in self._subjects

    def timeline_name(self, timeline: Mapping[str, Any]) -> str:
        return timeline_name(self.name, timeline)

    def subject_id(self, timeline: Mapping[str, Any]) -> str:
        return f"{self.name}/{timeline['subject']}"

    # ------------------------------------------------------------------------------------- to override
    def iter_timelines(self) -> Iterator[dict]:
        raise NotImplementedError

    def timeline_events(self, timeline: Mapping[str, Any]) -> list[dict]:
        """The study's own rows for one timeline (before the common columns are added)."""
        raise NotImplementedError

    def fmri_source(self, timeline: Mapping[str, Any]) -> dict | None:
        """Where the run's fMRI comes from: ``{"space", "data"|"left"/"right", "mask"?}``; None if the
        timeline has no fMRI (Algonauts' Friends season 7)."""
        raise NotImplementedError

    def volume_source(self, timeline: Mapping[str, Any]) -> dict | None:
        """The run's MNI volume for voxel targets: ``{"space", "data", "mask"?}``; None if the timeline has no
        fMRI. Readers whose runs offer surfaces and volumes override it to pick the volume."""
        src = self.fmri_source(timeline)
        if src is not None and "data" not in src:
            raise StudyDataError(f"{self.timeline_name(timeline)}: subcortical targets need an MNI volume; this run "
                                 f"has only {src.get('space', 'surface')} surfaces")
        return src

    def stimulus_of(self, timeline: Mapping[str, Any]) -> str | None:
        """The stimulus a run shows as a whole (equal for runs that repeat it), or None when runs are not
        repeats of one another."""
        return None

    # ----------------------------------------------------------------------------------------- shared
    @property
    def output_space(self) -> OutputSpace:
        """What the targets' columns are: fsaverage5, or the subcortical grid's voxels."""
        return fsaverage5_space() if self.grid is None else subcortical_space(self.grid)

    def target_source(self, timeline: Mapping[str, Any]) -> dict | None:
        """The fMRI files the targets are made from: :meth:`fmri_source` for fsaverage5, :meth:`volume_source`
        for the subcortical grid; None if the timeline has no fMRI."""
        return self.fmri_source(timeline) if self.grid is None else self.volume_source(timeline)

    def presentations(self, timelines) -> dict[str, dict]:
        """{timeline name: {"stimulus", "repeat"}}: each subject's runs of one stimulus numbered 1, 2, ... in
        the order given (timelines without a stimulus are left out)."""
        seen: dict[tuple, int] = {}
        out = {}
        for tl in timelines:
            stimulus = self.stimulus_of(tl)
            if stimulus is None:
                continue
            key = (str(tl["subject"]), str(stimulus))
            seen[key] = seen.get(key, 0) + 1
            out[self.timeline_name(tl)] = {"stimulus": str(stimulus), "repeat": seen[key]}
        return out

    def load_events(self, timeline: Mapping[str, Any]) -> pd.DataFrame:
        """Validated events table of one timeline (TRIBE's standardized columns and order)."""
        name = self.timeline_name(timeline)
        extra = {k: str(v) for k, v in timeline.items() if k != "subject"}
        rows = []
        for row in self.timeline_events(timeline):
            full = {**extra, **row}
            full["timeline"] = name
            full["subject"] = self.subject_id(timeline)
            full["study"] = self.name
            rows.append(full)
        return make_events(rows, source=name)

    def load_fmri(self, timeline: Mapping[str, Any]) -> np.ndarray | None:
        """(n_1Hz, 20484) float32 target (or (n_1Hz, n_voxels) with a subcortical grid): projected/truncated,
        cleaned, resampled to 1 Hz."""
        from nforge_jax.data.studies import fmri

        src = self.target_source(timeline)
        if src is None:
            return None
        if self.grid is not None:
            return self._subcortical_targets(timeline, src)
        try:
            if "left" in src:
                surf = fmri.load_surface_bold(src["left"], src["right"])
                out = fmri.clean_and_resample(surf.T, self.tr_s)
                del surf
                return out
            return fmri.load_volume_targets(src["data"], src.get("mask"), self.tr_s)
        except fmri.FmriFileError as exc:
            raise StudyDataError(f"{self.timeline_name(timeline)}: {exc}") from exc

    def _subcortical_targets(self, timeline: Mapping[str, Any], src: Mapping[str, Any]) -> np.ndarray:
        from nforge_jax.data.studies import fmri
        from nforge_jax.data.subcortical import subcortical_targets

        try:
            if fmri.n_volumes(src["data"]) < 2:  # as for the cortex: one volume cannot be detrended
                raise fmri.FmriFileError(f"{src['data']}: expected at least 2 volumes, got 1")
            return subcortical_targets(src["data"], self.tr_s, self.grid, mask=src.get("mask"),
                                       fwhm=self.subcortical_fwhm_mm)
        except (ValueError, FileNotFoundError) as exc:  # the message names the file
            raise StudyDataError(f"{self.timeline_name(timeline)}: {exc}") from exc

    def load_timeline(self, timeline: Mapping[str, Any]) -> tuple[pd.DataFrame, np.ndarray | None]:
        """(events, fmri) of one timeline; fmri is None where the study has no recording for it."""
        return self.load_events(timeline), self.load_fmri(timeline)

    def expected_timelines(self) -> int:
        subjects = self.expected_per_subject
        if self._subjects is not None:
            return sum(n for s, n in subjects.items() if str(s) in self._subjects)
        return sum(subjects.values())

    def check_count(self, found: int) -> TimelineCount:
        expected = self.expected_timelines()
        ok = found == expected
        scope = "" if self._subjects is None else f" for subjects {sorted(self._subjects)}"
        msg = (f"{self.name}: found {found} timelines in {self.root}; the published dataset has {expected}"
               f"{scope}" + ("" if ok else " (partial or modified dataset)"))
        if not ok:
            log.warning(msg)
        else:
            log.info(msg)
        return TimelineCount(found=found, expected=expected, ok=ok, message=msg)

    # ---------------------------------------------------------------------------------------- helpers
    def fmri_row(self, timeline: Mapping[str, Any], src: Mapping[str, Any], **extra) -> dict:
        """The ``Fmri`` event of a run: start 0, duration n_volumes x TR (read from the file header)."""
        from nforge_jax.data.studies import fmri

        try:
            if "left" in src:
                n_vols = fmri.n_volumes(src["left"])
                path = src["left"]
            else:
                n_vols = fmri.n_volumes(src["data"])
                path = src["data"]
        except fmri.FmriFileError as exc:
            raise StudyDataError(f"{self.timeline_name(timeline)}: {exc}") from exc
        row = dict(type="Fmri", start=0.0, duration=n_vols * self.tr_s, filepath=str(path),
                   frequency=1.0 / self.tr_s, space=src.get("space", ""), n_volumes=n_vols)
        if "right" in src:
            row["filepath_right"] = str(src["right"])
        if src.get("mask") is not None:
            row["mask_filepath"] = str(src["mask"])
        row.update(extra)
        return row

    def require_folder(self, path: Path, what: str) -> Path:
        """``path`` if it is a directory, else :class:`MissingStudyFile` naming the study and the folder."""
        if not Path(path).is_dir():
            raise MissingStudyFile(f"{self.name}: {what} folder not found: {path}")
        return path

    def require(self, path: Path, what: str, timeline: Mapping[str, Any] | None = None) -> Path:
        """``path`` if it exists, else :class:`MissingStudyFile` naming it and what it is for."""
        if not Path(path).exists():
            where = f"{self.timeline_name(timeline)}: " if timeline is not None else f"{self.name}: "
            raise MissingStudyFile(f"{where}{what} not found: {path}")
        return Path(path)
