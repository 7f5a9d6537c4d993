"""LeBel 2023 (OpenNeuro ds003020): 8 subjects listening to spoken stories, TR 2.0 s.

Layout (study root ``$DATAPATH/Lebel2023Bold``)::

    download/ds003020/
        stimuli/{story}.wav
        derivative/TextGrids/{story}.TextGrid                   (tiers "phone" and "word")
        sub-UTS01/ses-2/func/sub-UTS01_ses-2_task-{story}_bold.nii.gz        (raw; lists the runs)
        sub-UTS01/ses-N/func/sub-UTS01_ses-N_task-wheretheressmoke_run-R_bold.nii.gz  (the repeated story)
    download/ds003020-fmriprep/sub-UTS01/ses-2/func/
        sub-UTS01_ses-2_task-{story}_hemi-{L,R}_space-fsaverage[5]_bold.func.gii   (read when present)
        sub-UTS01_ses-2_task-{story}_space-MNI152NLin2009cAsym[_res-2]_desc-preproc_bold.nii.gz + _desc-brain_mask

Timelines (TRIBE v2's ``Lebel2023Bold``): for UTS01-UTS08, every raw ``*_bold.nii.gz`` of every session
except the localizers and UTS01 ses-7 ``treasureisland`` (a corrupt file in the release), as
``dict(subject="UTS01", session="2", task="avatar", run=None)`` (``run`` is an int only for the repeated
``wheretheressmoke`` runs): 432 in all.
fMRI: from the fmriprep derivative; fsaverage-family surfaces first (first 10,242 vertices per
hemisphere), else the masked MNI volume projected to fsaverage5. Subcortical targets always read the MNI
volume (``MNI152NLin2009cAsym``, else another MNI space such as deepprep's ``MNI152NLin6Asym``; the public
derivative ships ``space-MNI152NLin2009cAsym_res-2`` BOLD + brain mask for every run), as TRIBE v2's space
selection does for a voxel projection; a run with surfaces only is refused, naming the file it lacks.
Events: ``Audio`` (the story wav, start 10 s: the sound begins 10 s after the scan), ``Word`` and
``Phoneme`` rows from the TextGrid (start + 10 s, lower-cased, silence/noise marks dropped), ``Fmri``
(start 0, 0.5 Hz); ``split`` = "test" for wheretheressmoke, else "train".
Repeats: a run's ``stimulus`` is its story; a subject's runs of ``wheretheressmoke`` are its repeats, numbered
1, 2, ... (``repeat``, store meta) in session order, the numbered runs of a session before its run-less file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from nforge_jax.data.studies.base import MissingStudyFile, Study, StudyDataError
from nforge_jax.data.studies.bids import choose_space, choose_volume_space, find_fmriprep_run, parse_entities
from nforge_jax.data.studies.probe import probe_audio
from nforge_jax.data.studies.textgrid import read_textgrid

__all__ = ["Lebel2023Bold"]

SUBJECTS = ("UTS01", "UTS02", "UTS03", "UTS04", "UTS05", "UTS06", "UTS07", "UTS08")
EXPECTED = {"UTS01": 92, "UTS02": 93, "UTS03": 93, "UTS04": 30, "UTS05": 31, "UTS06": 31, "UTS07": 31,
            "UTS08": 31}
LOCALIZERS = ("AudioMotorLocalizer", "AuditoryLocalizer", "CategoryLocalizer", "MotorLocalizer")
SKIPPED = {("UTS01", "7", "treasureisland")}
TEST_STORY = "wheretheressmoke"
AUDIO_START_S = 10.0
# Marks that are not words: silences, breaths, noises, sentence boundaries.
NON_WORDS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp",
                       "{BR}", "{LG}", "{LS}", "{NS}", "{SP}"})
TIER_TYPES = {"word": "Word", "words": "Word", "phone": "Phoneme", "phones": "Phoneme"}


def _session_number(name: str) -> int:
    m = re.fullmatch(r"ses-(\d+)", name)
    return int(m.group(1)) if m else -1


class Lebel2023Bold(Study):
    name = "Lebel2023Bold"
    aliases = ("Lebel2023", "ds003020")
    tr_s = 2.0
    expected_per_subject = EXPECTED

    @property
    def raw(self) -> Path:
        return self.download / "ds003020"

    @property
    def derivatives(self) -> Path:
        return self.download / "ds003020-fmriprep"

    def iter_timelines(self) -> Iterator[dict]:
        self.require_folder(self.raw, "raw dataset")
        for subject in SUBJECTS:
            sdir = self.raw / f"sub-{subject}"
            if not self.wants_subject(subject) or not sdir.is_dir():
                continue
            sessions = sorted((p for p in sdir.iterdir() if p.is_dir() and _session_number(p.name) > 0),
                              key=lambda p: _session_number(p.name))
            for ses in sessions:
                session = str(_session_number(ses.name))
                found: dict[tuple[str, int | None], None] = {}
                func = ses / "func"
                names = sorted(p.name for p in func.glob("*_bold.nii.gz")) if func.is_dir() else []
                for name in names:
                    ents, suffix, _ = parse_entities(name)
                    task = ents.get("task")
                    if suffix != "bold" or task is None or task.startswith(LOCALIZERS):
                        continue
                    if (subject, session, task) in SKIPPED:
                        continue
                    run = ents.get("run")
                    if run is not None:
                        if not run.isdigit():
                            raise StudyDataError(f"{func / name}: run entity {run!r} is not a number")
                        run = int(run)
                    found[(task, run)] = None
                # stories in file-name order; the repeated story's runs 1..10 before the run-less file
                for task, run in sorted(found, key=lambda k: (k[0], k[1] is None, k[1] or 0)):
                    yield dict(subject=subject, session=session, task=task, run=run)

    def stimulus_of(self, tl: Mapping[str, Any]) -> str:
        return str(tl["task"])

    # ------------------------------------------------------------------------------------------- files
    def wav_path(self, tl: Mapping[str, Any]) -> Path:
        return self.raw / "stimuli" / f"{tl['task']}.wav"

    def textgrid_path(self, tl: Mapping[str, Any]) -> Path:
        return self.raw / "derivative" / "TextGrids" / f"{tl['task']}.TextGrid"

    def _fmriprep_run(self, tl: Mapping[str, Any]):
        func = self.derivatives / f"sub-{tl['subject']}" / f"ses-{tl['session']}" / "func"
        match = {"sub": tl["subject"], "ses": str(tl["session"]), "task": tl["task"],
                 "run": None if tl.get("run") is None else str(tl["run"])}
        try:
            return find_fmriprep_run(func, match)
        except ValueError as exc:
            raise StudyDataError(f"{self.timeline_name(tl)}: {exc}") from exc

    def _stem(self, tl: Mapping[str, Any]) -> str:
        run_part = "" if tl.get("run") is None else f"_run-{tl['run']}"
        return f"sub-{tl['subject']}_ses-{tl['session']}_task-{tl['task']}{run_part}"

    def fmri_source(self, tl: Mapping[str, Any]) -> dict:
        run = self._fmriprep_run(tl)
        chosen = choose_space(run)
        if chosen is None:
            raise MissingStudyFile(
                f"{self.timeline_name(tl)}: no usable fMRI in {run.folder}: expected "
                f"{self._stem(tl)}_hemi-L/R_space-fsaverage*_bold.func.gii or "
                f"..._space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        space, parts = chosen
        src = {"space": space, **parts}
        if "left" in src:
            src.pop("mask", None)  # surfaces have no mask
        elif "mask" not in src:
            src["mask"] = None
        return src

    def volume_source(self, tl: Mapping[str, Any]) -> dict:
        """The run's MNI volume (+ brain mask when fmriprep wrote one), even where surfaces exist."""
        run = self._fmriprep_run(tl)
        chosen = choose_volume_space(run)
        if chosen is None:
            has = sorted(run.spaces) or "no fmriprep files"
            raise MissingStudyFile(
                f"{self.timeline_name(tl)}: subcortical targets need an MNI volume: expected "
                f"{self._stem(tl)}_space-MNI152NLin2009cAsym[_res-2]_desc-preproc_bold.nii.gz in {run.folder} "
                f"(it has {has})")
        space, parts = chosen
        return {"space": space, "data": parts["data"], "mask": parts.get("mask")}

    # ------------------------------------------------------------------------------------------ events
    def timeline_events(self, tl: Mapping[str, Any]) -> list[dict]:
        split = "test" if tl["task"] == TEST_STORY else "train"
        wav = self.require(self.wav_path(tl), "story audio", tl)
        grid = self.require(self.textgrid_path(tl), "TextGrid", tl)
        info = probe_audio(wav)
        common = dict(language="english", modality="heard", split=split)
        rows: list[dict] = [dict(type="Audio", start=AUDIO_START_S, duration=info.duration, filepath=str(wav),
                                 frequency=info.sample_rate, offset=0.0, **common)]
        tiers = read_textgrid(grid)
        if not any(t.name.strip().lower() in TIER_TYPES for t in tiers):
            raise StudyDataError(f"{grid}: no 'word' or 'phone' tier (tiers: {[t.name for t in tiers]})")
        for tier in tiers:
            etype = TIER_TYPES.get(tier.name.strip().lower())
            if etype is None:
                continue
            for start, stop, text in tier.items:
                text = text.strip()
                if not text or text in NON_WORDS:
                    continue
                rows.append(dict(type=etype, start=start + AUDIO_START_S, duration=stop - start, text=text.lower(),
                                 filepath=str(wav), **common))
        rows.append(self.fmri_row(tl, self.target_source(tl), layout="fmriprep", split=split))
        return rows
