"""Wen 2017 (Purdue "video_fmri_dataset"), 3 subjects watching 8-min movie segments, TR 2.0 s.

Layout (study root ``$DATAPATH/Wen2017``)::

    download/video_fmri_dataset/
        stimuli/seg1.mp4 ... seg18.mp4, test1.mp4 ... test5.mp4
        subject1/fmri/seg1/mni/seg1_1_mni.nii.gz, seg1_2_mni.nii.gz      (training segments: 2 runs)
        subject1/fmri/test1/mni/test1_1_mni.nii.gz ... test1_10_mni.nii.gz  (test segments: 10 runs;
                                                  some are spelled test1_3.mni.nii.gz)

Timelines: subject folder x segment folder (names starting with ``subject`` and ``seg``/``test``, in
natural order), runs 1-2 for ``seg*`` and 1-10 for ``test*``: 3 x (18 x 2 + 5 x 10) = 258.
Events: ``Video`` (start 0), ``Audio`` (the mp4's audio track, if any), ``Fmri`` (start 0, 0.5 Hz, the
MNI volume read as-is: the dataset ships no brain mask). The dataset has no transcripts.
Repeats: every run of a segment shows the whole segment again (2 runs of a training segment, 10 of a test
segment), so a run's ``stimulus`` is its segment and ``repeat`` its run (store meta, see ``Study.presentations``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from nforge_jax.data.studies.base import MissingStudyFile, Study
from nforge_jax.data.studies.probe import probe_video

__all__ = ["Wen2017"]

SUBJECTS = ("subject1", "subject2", "subject3")


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class Wen2017(Study):
    name = "Wen2017"
    tr_s = 2.0
    expected_per_subject = {s: 86 for s in SUBJECTS}

    @property
    def dataset(self) -> Path:
        return self.download / "video_fmri_dataset"

    def iter_timelines(self) -> Iterator[dict]:
        self.require_folder(self.dataset, "dataset")
        subjects = sorted((p for p in self.dataset.iterdir() if p.is_dir() and p.name.startswith("subject")),
                          key=lambda p: _natural(p.name))
        for sdir in subjects:
            if not self.wants_subject(sdir.name):
                continue
            fdir = sdir / "fmri"
            segs = sorted((p.name for p in fdir.iterdir() if p.is_dir() and p.name.startswith(("seg", "test")))
                          if fdir.is_dir() else [], key=_natural)
            for seg in segs:
                for run in range(1, 3 if seg.startswith("seg") else 11):
                    yield dict(subject=sdir.name, seg=seg, run=run)

    def stimulus_of(self, tl: Mapping[str, Any]) -> str:
        return str(tl["seg"])

    def video_path(self, tl: Mapping[str, Any]) -> Path:
        return self.dataset / "stimuli" / f"{tl['seg']}.mp4"

    def bold_path(self, tl: Mapping[str, Any]) -> Path:
        folder = self.dataset / tl["subject"] / "fmri" / tl["seg"] / "mni"
        path = folder / f"{tl['seg']}_{tl['run']}_mni.nii.gz"
        if not path.is_file():
            alt = folder / f"{tl['seg']}_{tl['run']}.mni.nii.gz"
            if alt.is_file():
                return alt
            raise MissingStudyFile(f"{self.timeline_name(tl)}: BOLD run not found: {path} (nor {alt.name})")
        return path

    def fmri_source(self, tl: Mapping[str, Any]) -> dict:
        return {"space": "MNI152NLin6Asym", "data": self.bold_path(tl)}

    def timeline_events(self, tl: Mapping[str, Any]) -> list[dict]:
        video = self.require(self.video_path(tl), "stimulus video", tl)
        info = probe_video(video)
        rows = [dict(type="Video", start=0.0, duration=info.duration, filepath=str(video), frequency=info.fps,
                     offset=0.0)]
        if info.has_audio:
            rows.append(dict(type="Audio", start=0.0, duration=info.duration, filepath=str(video),
                             frequency=info.audio_rate, offset=0.0))
        rows.append(self.fmri_row(tl, self.target_source(tl), layout="custom"))
        return rows
