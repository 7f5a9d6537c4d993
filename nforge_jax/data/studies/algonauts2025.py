"""Algonauts 2025 (CNeuroMod Friends seasons 1-7 + Movie10), volumetric fmriprep BOLD, TR 1.49 s.

Layout (study root ``$DATAPATH/Algonauts2025Bold``)::

    download/algonauts_2025.competitors/stimuli/
        movies/friends/s{1..7}/friends_s{SS}e{EE}{a-d}.mkv
        movies/movie10/{bourne,wolf,life,figures}/{movie}{NN}.mkv
        transcripts/friends/s{1..7}/friends_s{SS}e{EE}{a-d}.tsv
        transcripts/movie10/{movie}/movie10_{movie}{NN}.tsv
    download/{friends,movie10}.fmriprep/sub-0X/ses-NNN/func/
        sub-0X_ses-NNN_task-s01e01a_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz (+ _desc-brain_mask)
        sub-0X_ses-NNN_task-life01_run-1_space-...  (life and figures are shown twice: run-1, run-2)

Timelines (TRIBE v2's ``Algonauts2025Bold``): per subject (sub-01, 02, 03, 05), every Friends chunk whose
transcript exists except five that some subjects lack (s05e20a, s04e01a, s06e03a, s04e13b, s04e01b),
then every Movie10 chunk x run whose transcript exists: 336 + 61 = 397 per subject, 1588 in all. Season 7
is the competition's held-out set: events but no fMRI.

Events: ``Video`` (the .mkv, start 0), ``Audio`` (the .mkv's audio track, when it has one), one ``Text``
(all words) and one ``Word`` per transcript word (onsets relative to the movie start), ``Fmri`` (start 0,
1/1.49 Hz). ``split`` = "test" for season 7, else "train". Subcortical targets read the same MNI volume and
brain mask (the competition's parcel ``.h5`` files are never read).

One deliberate difference from TRIBE v2: its file pattern for Movie10 ignores the run, so both viewings of
a life/figures chunk read the first viewing's BOLD; here run-2 reads the run-2 file.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from nforge_jax.data.studies.base import MissingStudyFile, Study, StudyDataError
from nforge_jax.data.studies.bids import find_fmriprep_run
from nforge_jax.data.studies.probe import probe_video

__all__ = ["Algonauts2025Bold", "read_transcript"]

SUBJECTS = ("sub-01", "sub-02", "sub-03", "sub-05")
SKIPPED_FRIENDS = frozenset({"s05e20a", "s04e01a", "s06e03a", "s04e13b", "s04e01b"})
MOVIE10 = {"bourne": (1,), "wolf": (1,), "life": (1, 2), "figures": (1, 2)}
MNI = "MNI152NLin2009cAsym"
TRANSCRIPT_COLUMNS = ("text_per_tr", "words_per_tr", "onsets_per_tr", "durations_per_tr")


def _parse_list(cell, path: Path, row: int, column: str) -> list:
    """A list literal stored as text (``"['so', 'what']"``); empty cells are empty lists."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    text = str(cell).strip()
    if text == "":
        return []
    try:
        value = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, SyntaxError) as exc:
        raise StudyDataError(f"{path}: row {row}, column {column!r}: expected a Python list literal, "
                             f"got {text[:80]!r}") from exc
    if not isinstance(value, (list, tuple)):
        raise StudyDataError(f"{path}: row {row}, column {column!r}: expected a list, got {type(value).__name__}")
    return list(value)


def read_transcript(path: Path) -> list[tuple[str, float, float]]:
    """Words of an Algonauts transcript TSV as (text, onset s, duration s), in file order."""
    path = Path(path)
    if not path.is_file():
        raise MissingStudyFile(f"transcript not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise StudyDataError(f"{path}: cannot read as a tab-separated table ({exc})") from exc
    missing = [c for c in TRANSCRIPT_COLUMNS[1:] if c not in df.columns]
    if missing:
        raise StudyDataError(f"{path}: missing column(s) {missing}; expected {list(TRANSCRIPT_COLUMNS)}")
    words = []
    for i, row in enumerate(df.itertuples(index=False)):
        w = _parse_list(getattr(row, "words_per_tr"), path, i, "words_per_tr")
        on = _parse_list(getattr(row, "onsets_per_tr"), path, i, "onsets_per_tr")
        du = _parse_list(getattr(row, "durations_per_tr"), path, i, "durations_per_tr")
        if not len(w) == len(on) == len(du):
            raise StudyDataError(f"{path}: row {i}: words_per_tr, onsets_per_tr and durations_per_tr have "
                                 f"different lengths ({len(w)}, {len(on)}, {len(du)})")
        for text, onset, dur in zip(w, on, du):
            try:
                onset, dur = float(onset), float(dur)
            except (TypeError, ValueError) as exc:
                raise StudyDataError(f"{path}: row {i}: word {text!r} has a non-numeric onset/duration "
                                     f"({onset!r}, {dur!r})") from exc
            text = str(text).strip()
            if text:
                words.append((text, onset, dur))
    return words


class Algonauts2025Bold(Study):
    name = "Algonauts2025Bold"
    aliases = ("Algonauts2025",)
    tr_s = 1.49
    expected_per_subject = {s: 397 for s in SUBJECTS}

    @property
    def stimuli(self) -> Path:
        return self.download / "algonauts_2025.competitors" / "stimuli"

    def _subject_present(self, subject: str) -> bool:
        return any((self.download / f"{task}.fmriprep" / subject).is_dir() for task in ("friends", "movie10"))

    def iter_timelines(self) -> Iterator[dict]:
        tdir = self.require_folder(self.stimuli / "transcripts", "transcripts")
        for subject in SUBJECTS:
            if not self.wants_subject(subject) or not self._subject_present(subject):
                continue
            for season in range(1, 8):
                for episode in range(1, 26):
                    for chunk in "abcd":
                        key = f"s{season:02d}e{episode:02d}{chunk}"
                        if key in SKIPPED_FRIENDS:
                            continue
                        if (tdir / "friends" / f"s{season}" / f"friends_{key}.tsv").is_file():
                            yield dict(subject=subject, task="friends", movie=f"s{season:02d}",
                                       chunk=f"e{episode:02d}{chunk}", run=0)
            for movie, runs in MOVIE10.items():
                for chunk in range(1, 18):
                    if not (tdir / "movie10" / movie / f"movie10_{movie}{chunk:02d}.tsv").is_file():
                        continue
                    for run in runs:
                        yield dict(subject=subject, task="movie10", movie=movie, chunk=chunk, run=run)

    # ------------------------------------------------------------------------------------------- files
    def transcript_path(self, tl: Mapping[str, Any]) -> Path:
        t = self.stimuli / "transcripts"
        if tl["task"] == "friends":
            return t / "friends" / f"s{str(tl['movie'])[-1]}" / f"friends_{tl['movie']}{tl['chunk']}.tsv"
        return t / "movie10" / tl["movie"] / f"movie10_{tl['movie']}{int(tl['chunk']):02d}.tsv"

    def movie_path(self, tl: Mapping[str, Any]) -> Path:
        m = self.stimuli / "movies"
        if tl["task"] == "friends":
            return m / "friends" / f"s{str(tl['movie'])[-1]}" / f"friends_{tl['movie']}{tl['chunk']}.mkv"
        return m / "movie10" / tl["movie"] / f"{tl['movie']}{int(tl['chunk']):02d}.mkv"

    @staticmethod
    def has_fmri(tl: Mapping[str, Any]) -> bool:
        return not (tl["task"] == "friends" and tl["movie"] == "s07")

    def fmri_source(self, tl: Mapping[str, Any]) -> dict | None:
        if not self.has_fmri(tl):
            return None
        subject = tl["subject"]
        base = self.download / f"{tl['task']}.fmriprep" / subject
        if tl["task"] == "friends":
            task, run = f"{tl['movie']}{tl['chunk']}", None
        else:
            task = f"{tl['movie']}{int(tl['chunk']):02d}"
            run = str(tl["run"]) if len(MOVIE10[tl["movie"]]) > 1 else None
        match = {"sub": subject.removeprefix("sub-"), "task": task}
        if run is not None:
            match["run"] = run
        sessions = sorted(p for p in base.glob("ses-*") if p.is_dir()) if base.is_dir() else []
        # TRIBE takes the first session (sorted) that holds the chunk: repeated chunks use their first viewing.
        for ses in sessions:
            try:
                found = find_fmriprep_run(ses / "func", {**match, "ses": ses.name.removeprefix("ses-")})
            except ValueError as exc:
                raise StudyDataError(f"{self.timeline_name(tl)}: {exc}") from exc
            parts = found.spaces.get(MNI, {})
            if "data" in parts:
                if "mask" not in parts:
                    raise MissingStudyFile(f"{self.timeline_name(tl)}: brain mask not found next to "
                                           f"{parts['data']} (expected *_space-{MNI}_desc-brain_mask.nii.gz)")
                return {"space": MNI, "data": parts["data"], "mask": parts["mask"]}
        pattern = f"{base}/ses-*/func/{subject}_ses-*_task-{task}{'_run-' + run if run else ''}_space-{MNI}_desc-preproc_bold.nii.gz"
        raise MissingStudyFile(f"{self.timeline_name(tl)}: BOLD run not found: {pattern}")

    # ------------------------------------------------------------------------------------------ events
    def timeline_events(self, tl: Mapping[str, Any]) -> list[dict]:
        split = "test" if (tl["task"] == "friends" and tl["movie"] == "s07") else "train"
        movie = self.require(self.movie_path(tl), "movie file", tl)
        words = read_transcript(self.require(self.transcript_path(tl), "transcript", tl))
        info = probe_video(movie)
        rows: list[dict] = [dict(type="Video", start=0.0, duration=info.duration, filepath=str(movie),
                                 frequency=info.fps, offset=0.0, split=split)]
        if info.has_audio:
            rows.append(dict(type="Audio", start=0.0, duration=info.duration, filepath=str(movie),
                             frequency=info.audio_rate, offset=0.0, split=split))
        if words:
            first = min(on for _, on, _ in words)
            last = max(on + du for _, on, du in words)
            rows.append(dict(type="Text", start=first, duration=last - first, text=" ".join(w for w, _, _ in words),
                             language="english", modality="heard", split=split))
            rows.extend(dict(type="Word", start=on, duration=du, text=w, language="english", modality="heard",
                             split=split) for w, on, du in words)
        src = self.target_source(tl)
        if src is not None:
            rows.append(self.fmri_row(tl, src, layout="fmriprep", split=split))
        return rows
