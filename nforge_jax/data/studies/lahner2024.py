"""Lahner 2024, BOLD Moments Dataset (OpenNeuro ds005165): 3 s video clips, TR 1.75 s.

Layout (study root ``$DATAPATH/Lahner2024Bold``)::

    download/sub-01/ses-02/func/sub-01_ses-02_task-train_run-1_events.tsv   (run index not zero-padded)
    download/derivatives/versionB/fmriprep/sub-01/ses-02/func/
        sub-01_ses-02_task-train_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz
        sub-01_ses-02_task-train_run-1_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz
    download/derivatives/stimuli_metadata/llm_frame_annotations.json    (optional: clip captions)
    stimuli/stimulus_set/stimuli/{train,test}/NNNN.mp4

Timelines: subjects 1-10 x sessions 2-5 x (train runs 1-10, test runs 1-3) = 520, as
``dict(subject=1, session=2, split="train", run=1)``.
Events: one ``Video`` per non-oddball trial of the run's BIDS ``events.tsv`` (start = onset, the clip's
probed duration, ``middle_frame_captions`` = its five GIT captions joined by newlines when the annotation
file is present), ``Audio`` for clips that carry sound, and ``Fmri`` (start 0, 1/1.75 Hz, the masked
MNI volume).

Repeats are of clips, not of runs: the test clips come back in several test runs (each run its own order,
mixed with others), so no run repeats another and timelines carry no ``stimulus`` meta; ``nforge evaluate``'s
run-level repeat ceiling (which averages whole runs sample by sample) therefore does not apply, and a
clip-level ceiling would need per-clip responses (GLM betas), which are not read here. What is recorded is
per event: ``stim_file`` (the clip id) and ``repeat``, the clip's presentation number for this subject
(1, 2, ...), counted over the subject's runs in timeline order (sessions, then train runs, then test runs:
the file names do not give the acquisition order inside a session) and over earlier trials of the run.

The betas pickles under ``derivatives/versionB/fsaverage/GLM`` are never read: unpickling runs code.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from nforge_jax.data.studies.base import MissingStudyFile, Study, StudyDataError
from nforge_jax.data.studies.probe import probe_video

__all__ = ["Lahner2024Bold", "read_bids_events"]

log = logging.getLogger("nforge_jax.data.studies")

SUBJECTS = tuple(range(1, 11))
SESSIONS = (2, 3, 4, 5)
RUNS = {"train": tuple(range(1, 11)), "test": (1, 2, 3)}
MNI = "MNI152NLin2009cAsym"
EVENTS_COLUMNS = ("onset", "duration", "stim_file", "trial_type")


def read_bids_events(path: Path) -> pd.DataFrame:
    """A BIDS ``events.tsv`` (``n/a`` = missing), with its required columns checked."""
    path = Path(path)
    if not path.is_file():
        raise MissingStudyFile(f"events file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except Exception as exc:
        raise StudyDataError(f"{path}: cannot read as a tab-separated BIDS events table ({exc})") from exc
    missing = [c for c in EVENTS_COLUMNS if c not in df.columns]
    if missing:
        raise StudyDataError(f"{path}: missing column(s) {missing}; expected at least {list(EVENTS_COLUMNS)}")
    for col in ("onset", "duration"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | ~num.map(math.isfinite)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise StudyDataError(f"{path}: row {i}, column {col!r}: expected a number of seconds, "
                                 f"got {df[col].iloc[i]!r}")
        df[col] = num.astype(float)
    return df


class Lahner2024Bold(Study):
    name = "Lahner2024Bold"
    aliases = ("Lahner2024", "BOLDMoments")
    tr_s = 1.75
    expected_per_subject = {str(s): 52 for s in SUBJECTS}

    def __init__(self, root, subjects=None, *, grid=None):
        super().__init__(root, subjects, grid=grid)
        self._captions: dict | None = None
        self._clip_history: dict[int, dict[tuple, Counter]] = {}

    def _normalize_subject(self, subject) -> str:
        s = super()._normalize_subject(subject).removeprefix("sub-")
        return str(int(s)) if s.isdigit() else s

    @property
    def fmriprep(self) -> Path:
        return self.download / "derivatives" / "versionB" / "fmriprep"

    @property
    def stimuli(self) -> Path:
        return self.root / "stimuli" / "stimulus_set" / "stimuli"

    def _subject_present(self, subject: int) -> bool:
        return (self.download / f"sub-{subject:02d}").is_dir() or (self.fmriprep / f"sub-{subject:02d}").is_dir()

    def iter_timelines(self) -> Iterator[dict]:
        for subject in SUBJECTS:
            if not self.wants_subject(subject) or not self._subject_present(subject):
                continue
            for session in SESSIONS:
                for split, runs in RUNS.items():
                    for run in runs:
                        yield dict(subject=subject, session=session, split=split, run=run)

    # ------------------------------------------------------------------------------------------- files
    def _bids(self, root: Path, tl: Mapping[str, Any], suffix: str) -> Path:
        sub, ses = f"sub-{int(tl['subject']):02d}", f"ses-{int(tl['session']):02d}"
        return root / sub / ses / "func" / f"{sub}_{ses}_task-{tl['split']}_run-{int(tl['run'])}{suffix}"

    def events_path(self, tl: Mapping[str, Any]) -> Path:
        return self._bids(self.download, tl, "_events.tsv")

    def fmri_source(self, tl: Mapping[str, Any]) -> dict:
        data = self._bids(self.fmriprep, tl, f"_space-{MNI}_desc-preproc_bold.nii.gz")
        mask = self._bids(self.fmriprep, tl, f"_space-{MNI}_desc-brain_mask.nii.gz")
        self.require(data, "preprocessed BOLD", tl)
        self.require(mask, "brain mask", tl)
        return {"space": MNI, "data": data, "mask": mask}

    def captions(self) -> dict:
        """``{stem: [captions]}`` from ``llm_frame_annotations.json`` (empty when the file is absent)."""
        if self._captions is None:
            path = self.download / "derivatives" / "stimuli_metadata" / "llm_frame_annotations.json"
            if not path.is_file():
                log.info("%s: %s not found; Video events get no captions", self.name, path)
                self._captions = {}
            else:
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise StudyDataError(f"{path}: not valid JSON ({exc})") from exc
                if not isinstance(raw, dict):
                    raise StudyDataError(f"{path}: expected an object {{stem: {{model: [captions]}}}}, "
                                         f"got {type(raw).__name__}")
                caps = {}
                for stem, entry in raw.items():
                    value = entry.get("GIT-git-large-coco") if isinstance(entry, dict) else None
                    if value is None:
                        continue
                    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                        raise StudyDataError(f"{path}: entry {stem!r}, field 'GIT-git-large-coco': expected a "
                                             "list of caption strings")
                    caps[str(stem)] = value
                self._captions = caps
        return self._captions

    def _run_key(self, tl: Mapping[str, Any]) -> tuple:
        return int(tl["session"]), str(tl["split"]), int(tl["run"])

    def clips_shown_before(self, tl: Mapping[str, Any]) -> Counter:
        """{stim_file: presentations to this subject} in the runs before ``tl`` (timeline order; runs whose
        events file is absent count nothing)."""
        subject = int(tl["subject"])
        if subject not in self._clip_history:
            history, shown = {}, Counter()
            for session in SESSIONS:
                for split, runs in RUNS.items():
                    for run in runs:
                        other = dict(subject=subject, session=session, split=split, run=run)
                        history[self._run_key(other)] = Counter(shown)
                        path = self.events_path(other)
                        if path.is_file():
                            table = read_bids_events(path)
                            shown.update(str(stim) for stim, kind in zip(table.stim_file, table.trial_type)
                                         if str(kind) != "oddball" and isinstance(stim, str) and stim.strip())
            self._clip_history[subject] = history
        return Counter(self._clip_history[subject][self._run_key(tl)])

    # ------------------------------------------------------------------------------------------ events
    def timeline_events(self, tl: Mapping[str, Any]) -> list[dict]:
        events_path = self.require(self.events_path(tl), "BIDS events file", tl)
        table = read_bids_events(events_path)
        captions = self.captions()
        shown = self.clips_shown_before(tl)
        rows: list[dict] = []
        for i, trial in enumerate(table.itertuples(index=False)):
            if str(trial.trial_type) == "oddball":
                continue
            stim = trial.stim_file
            if not isinstance(stim, str) or not stim.strip():
                raise StudyDataError(f"{events_path}: row {i}, column 'stim_file': expected a clip path such as "
                                     f"'train/0001.mp4' for trial_type {trial.trial_type!r}, got {stim!r}")
            clip = self.require(self.stimuli / stim, f"stimulus clip (events row {i})", tl)
            info = probe_video(clip)
            shown[stim] += 1
            row = dict(type="Video", start=float(trial.onset), duration=info.duration, filepath=str(clip),
                       frequency=info.fps, offset=0.0, stim_file=stim, repeat=shown[stim])
            caps = captions.get(Path(stim).stem)
            if caps:
                row["middle_frame_captions"] = "\n".join(caps)
            rows.append(row)
            if info.has_audio:
                rows.append(dict(type="Audio", start=float(trial.onset), duration=info.duration,
                                 filepath=str(clip), frequency=info.audio_rate, offset=0.0, stim_file=stim,
                                 repeat=shown[stim]))
        rows.append(self.fmri_row(tl, self.target_source(tl), layout="custom"))
        return rows
