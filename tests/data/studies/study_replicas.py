"""Tiny replicas of the four study datasets, with their published directory layouts, file names and formats.

Volumes are 12 x 14 x 12 voxels of 16 mm covering MNI space (the fsaverage5 pial surface lies inside with
room for the 3 mm sampling ball, and so do the subcortical grid's voxels), so a run projects to all 20,484
vertices in milliseconds. Builders that take ``voxel_mm`` write finer volumes over fmriprep's
MNI152NLin2009cAsym box instead (-96..96, -132..96, -78..114 mm), where 6 mm smoothing is not negligible. Media files
are real, decodable H.264/AAC (PyAV) and PCM WAV files. Every builder returns the facts a test needs to
compute the expected events by hand.
"""

from __future__ import annotations

import json
import os
import pickle
import wave
from pathlib import Path

import numpy as np
import pandas as pd

SHAPE = (12, 14, 12)
AFFINE = np.array([[16.0, 0, 0, -96.0], [0, 16.0, 0, -128.0], [0, 0, 16.0, -80.0], [0, 0, 0, 1.0]])
MNI = "MNI152NLin2009cAsym"


# ----------------------------------------------------------------------------------------------- files

def mni_grid(voxel_mm: float = 16.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, affine) of the replicas' volumes: the default 16 mm grid, or ``voxel_mm`` voxels over fmriprep's
    MNI152NLin2009cAsym box (its 2 mm files are 97 x 115 x 97 voxels from (-96, -132, -78) mm)."""
    if voxel_mm == 16.0:
        return SHAPE, AFFINE
    shape = tuple(int(np.ceil(extent / voxel_mm)) + 1 for extent in (192, 228, 192))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    return shape, affine


def bold_data(n_vols: int, seed: int, *, constant: float | None = None, shape: tuple = SHAPE) -> np.ndarray:
    """(x, y, z, T) float32: a smooth spatial pattern x slow drift + noise (or a constant)."""
    if constant is not None:
        return np.full((*shape, n_vols), constant, dtype=np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(n_vols, dtype=np.float64)
    base = 100.0 + rng.normal(0, 5, shape)
    signal = rng.normal(0, 1, (*shape, n_vols)) + 0.3 * t + np.sin(t)[None, None, None, :] * base[..., None] / 50
    return (base[..., None] + signal).astype(np.float32)


def brain_mask(seed: int, shape: tuple = SHAPE) -> np.ndarray:
    """A mask that keeps most voxels and zeroes a random fifth, so masking changes the projection."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape) > 0.2).astype(np.uint8)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, *, tr: float | None = None) -> Path:
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nibabel.Nifti1Image(data, affine)
    if tr is not None and data.ndim == 4:
        img.header.set_zooms((*np.abs(np.diag(affine)[:3]), tr))
        img.header.set_xyzt_units("mm", "sec")
    nibabel.save(img, str(path))
    return path


def write_gifti(path: Path, data: np.ndarray) -> Path:
    """(n_vertices, T) -> GIFTI with one float32 data array per volume (fmriprep's .func.gii)."""
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [nibabel.gifti.GiftiDataArray(np.ascontiguousarray(data[:, t], dtype=np.float32),
                                           intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")
              for t in range(data.shape[1])]
    nibabel.save(nibabel.gifti.GiftiImage(darrays=arrays), str(path))
    return path


def write_video(path: Path, *, seconds: float, fps: int = 10, audio: bool = True, size: int = 32) -> Path:
    """A real H.264 (+ AAC mono 16 kHz) file; the container follows the extension (.mp4, .mkv)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(seconds * fps))
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), (i * 37) % 256, np.uint8), format="rgb24")
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            n_samples, pos = int(seconds * 16000), 0
            while pos < n_samples:
                k = min(1024, n_samples - pos)
                tone = 0.1 * np.sin(2 * np.pi * 440 * (pos + np.arange(k)) / 16000).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
                frame.sample_rate = 16000
                frame.pts = pos
                for p in a.encode(frame):
                    c.mux(p)
                pos += k
            for p in a.encode():
                c.mux(p)
    return path


def write_wav(path: Path, *, seconds: float, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * rate))
    pcm = (3000 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def textgrid_text(tiers: list[tuple[str, list[tuple[float, float, str]]]], xmax: float, form: str) -> str:
    """Praat TextGrid text in the ``long``, ``short`` or ``chronological`` serialisation."""
    if form == "long":
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {xmax} ",
                 "tiers? <exists> ", f"size = {len(tiers)} ", "item []: "]
        for i, (name, items) in enumerate(tiers, 1):
            lines += [f"    item [{i}]:", '        class = "IntervalTier" ', f"        name = {_q(name)} ",
                      "        xmin = 0 ", f"        xmax = {xmax} ", f"        intervals: size = {len(items)} "]
            for k, (a, b, t) in enumerate(items, 1):
                lines += [f"        intervals [{k}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                          f"            text = {_q(t)} "]
        return "\n".join(lines) + "\n"
    if form == "short":
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax), "<exists>",
                 str(len(tiers))]
        for name, items in tiers:
            lines += ['"IntervalTier"', _q(name), "0", str(xmax), str(len(items))]
            for a, b, t in items:
                lines += [str(a), str(b), _q(t)]
        return "\n".join(lines) + "\n"
    if form == "chronological":
        lines = ['"Praat chronological TextGrid text file"', f"0 {xmax}   ! Time domain.",
                 f"{len(tiers)}   ! Number of tiers."]
        lines += [f'"IntervalTier" {_q(name)} 0 {xmax}' for name, _ in tiers]
        entries = sorted((a, i, b, t) for i, (_, items) in enumerate(tiers, 1) for a, b, t in items)
        for a, i, b, t in entries:
            lines += ["", f"{i} {a} {b}", _q(t)]
        return "\n".join(lines) + "\n"
    raise ValueError(form)


# ------------------------------------------------------------------------------------------ Algonauts

FRIENDS_WORDS = [  # (TR row, words, onsets, durations); a word belongs to the TR in which it ends
    (0, [], [], []),
    (1, ["There's", "nothing", "to", "tell!"], [1.62, 1.9, 2.1, 2.3], [0.28, 0.2, 0.2, 0.3]),
    (2, ["He's"], [3.1], [0.35]),
    (3, [], [], []),
]


def _transcript(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = []
    for _, words, onsets, durs in rows:
        recs.append({"text_per_tr": " ".join(words), "words_per_tr": repr(list(words)),
                     "onsets_per_tr": repr(list(onsets)), "durations_per_tr": repr(list(durs))})
    pd.DataFrame(recs).to_csv(path, sep="\t", index=False)
    return path


def make_algonauts(datapath: Path, *, n_vols: int = 10, constant: float | None = None) -> dict:
    """``$DATAPATH/Algonauts2025Bold`` with sub-01: friends s01e01a/b (+ s01e01a repeated in a later session),
    s04e01a (a chunk TRIBE skips), s07e01a (no fMRI), movie10 bourne01 and life01 (runs 1 and 2)."""
    root = datapath / "Algonauts2025Bold" / "download"
    comp = root / "algonauts_2025.competitors" / "stimuli"
    for key in ("s01e01a", "s01e01b", "s04e01a", "s07e01a"):
        season = key[2]
        _transcript(comp / "transcripts" / "friends" / f"s{season}" / f"friends_{key}.tsv", FRIENDS_WORDS)
        write_video(comp / "movies" / "friends" / f"s{season}" / f"friends_{key}.mkv", seconds=2.0)
    for movie in ("bourne", "life"):
        _transcript(comp / "transcripts" / "movie10" / movie / f"movie10_{movie}01.tsv", FRIENDS_WORDS[:2])
        write_video(comp / "movies" / "movie10" / movie / f"{movie}01.mkv", seconds=2.0)
    _transcript(comp / "transcripts" / "ood" / "chaplin" / "ood_chaplin1.tsv", FRIENDS_WORDS[:2])  # unused
    # parcellated h5 of the competition (not read by the Bold reader): a decoy with the real name
    fdir = root / "algonauts_2025.competitors" / "fmri" / "sub-01" / "func"
    fdir.mkdir(parents=True, exist_ok=True)
    (fdir / "sub-01_task-friends_space-MNI152NLin2009cAsym_atlas-Schaefer18_parcel-1000Par7Net_desc-s123456_bold.h5"
     ).write_bytes(b"\x89HDF\r\n\x1a\n")

    files = {}

    def run(task_dir: str, ses: str, task: str, seed: int) -> Path:
        func = root / task_dir / "sub-01" / f"ses-{ses}" / "func"
        stem = f"sub-01_ses-{ses}_task-{task}"
        data = write_nifti(func / f"{stem}_space-{MNI}_desc-preproc_bold.nii.gz",
                           bold_data(n_vols, seed, constant=constant), tr=1.49)
        write_nifti(func / f"{stem}_space-{MNI}_desc-brain_mask.nii.gz", brain_mask(seed))
        # other fmriprep outputs the reader must ignore
        write_nifti(func / f"{stem}_space-T1w_desc-preproc_bold.nii.gz", bold_data(2, seed + 99)[:4, :4, :4])
        write_nifti(func / f"{stem}_space-{MNI}_boldref.nii.gz", bold_data(1, seed)[..., 0])
        (func / f"{stem}_space-{MNI}_desc-preproc_bold.json").write_text('{"RepetitionTime": 1.49}')
        (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("csf\twhite_matter\n1\t2\n")
        (func / f"{stem}_space-fsLR_den-91k_bold.dtseries.nii").write_bytes(b"\0" * 16)
        files[(task, ses)] = data
        return data

    run("friends.fmriprep", "003", "s01e01a", 1)
    run("friends.fmriprep", "004", "s01e01b", 2)
    run("friends.fmriprep", "005", "s01e01a", 3)  # repeated viewing: the first session wins
    run("movie10.fmriprep", "001", "bourne01", 4)
    run("movie10.fmriprep", "006", "life01_run-1", 5)
    run("movie10.fmriprep", "009", "life01_run-2", 6)
    return {"root": root.parent, "datapath": datapath, "files": files, "n_vols": n_vols, "movie_seconds": 2.0}


# ----------------------------------------------------------------------------------------------- Wen

def make_wen(datapath: Path, *, n_vols: int = 10, subject2_missing_run: bool = False) -> dict:
    """``$DATAPATH/Wen2017``: subject1 with seg1 (runs 1-2) and test1 (runs 1-10, run 3 spelled
    ``test1_3.mni.nii.gz``); optionally subject2 with seg1 run 2 missing."""
    ds = datapath / "Wen2017" / "download" / "video_fmri_dataset"
    write_video(ds / "stimuli" / "seg1.mp4", seconds=2.0, audio=False)
    write_video(ds / "stimuli" / "test1.mp4", seconds=2.0, audio=False)
    (ds / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (ds / "README.txt").write_text("video_fmri_dataset\n")
    files = {}
    seed = 10
    for seg, runs in (("seg1", (1, 2)), ("test1", range(1, 11))):
        for r in runs:
            name = f"{seg}_{r}.mni.nii.gz" if (seg, r) == ("test1", 3) else f"{seg}_{r}_mni.nii.gz"
            files[("subject1", seg, r)] = write_nifti(ds / "subject1" / "fmri" / seg / "mni" / name,
                                                      bold_data(n_vols, seed), tr=2.0)
            seed += 1
        cifti = ds / "subject1" / "fmri" / seg / "cifti"
        cifti.mkdir(parents=True, exist_ok=True)
        (cifti / f"{seg}_1_Atlas.dtseries.nii").write_bytes(b"\0" * 16)
    if subject2_missing_run:
        write_nifti(ds / "subject2" / "fmri" / "seg1" / "mni" / "seg1_1_mni.nii.gz", bold_data(n_vols, 99), tr=2.0)
    return {"root": datapath / "Wen2017", "dataset": ds, "files": files, "n_vols": n_vols}


# -------------------------------------------------------------------------------------------- Lahner

LAHNER_TRIALS = [  # onset, duration, stim_file, trial_type, value (BIDS: n/a = missing)
    (4.0, 3.0, "train/0001.mp4", "train", "n/a"),
    (8.0, 3.0, "n/a", "oddball", "1"),
    (12.0, 3.0, "train/0002.mp4", "train", "n/a"),
    (16.0, 3.0, "train/0001.mp4", "train", "n/a"),
]
LAHNER_CAPTIONS = {
    "0001": ["a man riding a bike", "a person on a bicycle", "a cyclist on a road", "a bike ride", "a man"],
    "0002": ["a dog in the grass", "a dog running", "a brown dog", "a dog outside", "a dog"],
}


def make_lahner(datapath: Path, *, n_vols: int = 10, with_captions: bool = True, voxel_mm: float = 16.0) -> dict:
    """``$DATAPATH/Lahner2024Bold`` with sub-01 ses-02 task-train run-1 (events, fmriprep MNI BOLD + mask, of
    ``voxel_mm`` voxels), two 1 s clips, the caption JSON and a betas pickle that must never be unpickled."""
    shape, affine = mni_grid(voxel_mm)
    dl = datapath / "Lahner2024Bold" / "download"
    func = dl / "sub-01" / "ses-02" / "func"
    func.mkdir(parents=True, exist_ok=True)
    lines = ["onset\tduration\tstim_file\ttrial_type\tvalue"]
    lines += [f"{o}\t{d}\t{s}\t{t}\t{v}" for o, d, s, t, v in LAHNER_TRIALS]
    events = func / "sub-01_ses-02_task-train_run-1_events.tsv"
    events.write_text("\n".join(lines) + "\n")
    (func / "sub-01_ses-02_task-train_run-1_bold.json").write_text('{"RepetitionTime": 1.75}')
    (dl / "task-train_events.json").write_text('{"stim_file": {"Description": "clip"}}')
    prep = dl / "derivatives" / "versionB" / "fmriprep" / "sub-01" / "ses-02" / "func"
    stem = "sub-01_ses-02_task-train_run-1"
    data = write_nifti(prep / f"{stem}_space-{MNI}_desc-preproc_bold.nii.gz", bold_data(n_vols, 20, shape=shape),
                       affine, tr=1.75)
    mask = write_nifti(prep / f"{stem}_space-{MNI}_desc-brain_mask.nii.gz", brain_mask(20, shape), affine)
    write_nifti(prep / f"{stem}_space-T1w_desc-preproc_bold.nii.gz", bold_data(2, 21)[:4, :4, :4])
    meta = dl / "derivatives" / "stimuli_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    if with_captions:
        (meta / "llm_frame_annotations.json").write_text(
            json.dumps({k: {"GIT-git-large-coco": v} for k, v in LAHNER_CAPTIONS.items()}))
    # A pickle that creates a marker file if anyone ever unpickles it.
    marker = datapath / "UNPICKLED"
    betas = dl / "derivatives" / "versionB" / "fsaverage" / "GLM" / "sub-01" / "prepared_betas"
    betas.mkdir(parents=True, exist_ok=True)
    (betas / "sub-01_organized_betas_task-train_hemi-left_normalized.pkl").write_bytes(
        pickle.dumps(_Trap(str(marker))))
    stim = datapath / "Lahner2024Bold" / "stimuli" / "stimulus_set" / "stimuli"
    write_video(stim / "train" / "0001.mp4", seconds=1.0, audio=False)
    write_video(stim / "train" / "0002.mp4", seconds=1.0, audio=False)
    return {"root": datapath / "Lahner2024Bold", "events": events, "data": data, "mask": mask, "marker": marker,
            "stimuli": stim, "n_vols": n_vols}


class _Trap:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# --------------------------------------------------------------------------------------------- Lebel

LEBEL_WORDS = [(0.0, 0.5, "sp"), (0.5, 0.9, "I"), (0.9, 1.4, "REACHED"), (1.4, 1.6, ""), (1.6, 2.0, "{BR}"),
               (2.0, 2.6, "over"), (2.6, 3.0, "sentence_end")]
LEBEL_PHONES = [(0.0, 0.5, "sp"), (0.5, 0.9, "AY1"), (0.9, 1.1, "R"), (1.1, 1.4, "IY1"), (1.4, 2.0, "ns"),
                (2.0, 2.6, "OW1"), (2.6, 3.0, "")]


def make_lebel(datapath: Path, *, n_vols: int = 8) -> dict:
    """``$DATAPATH/Lebel2023Bold`` with UTS01:
    ses-1 CategoryLocalizer (skipped), ses-2 ``avatar`` (fsaverage GIFTI 163,842/hemi + an MNI volume:
    the surface wins) and ``legacy`` (MNI res-2 volume + mask only), ses-3 ``wheretheressmoke`` runs 1-2
    (fsaverage5 GIFTI + MNI res-2 volume and mask, as the public derivative has for every run; the surfaces are
    the cortical targets, the volumes the subcortical ones), ses-7 ``treasureisland`` (skipped: corrupt in the
    release)."""
    dl = datapath / "Lebel2023Bold" / "download"
    raw = dl / "ds003020"
    grids = raw / "derivative" / "TextGrids"
    grids.mkdir(parents=True, exist_ok=True)
    tiers = [("phone", LEBEL_PHONES), ("word", LEBEL_WORDS)]
    forms = {"avatar": "long", "legacy": "chronological", "wheretheressmoke": "short"}
    for story, form in forms.items():
        (grids / f"{story}.TextGrid").write_text(textgrid_text(tiers, 3.0, form))
        write_wav(raw / "stimuli" / f"{story}.wav", seconds=3.0)
    write_wav(raw / "stimuli" / "auditory_localizer.wav", seconds=1.0)
    (raw / "derivative" / "respdict.json").write_text(json.dumps({"avatar": n_vols, "legacy": n_vols}))
    (raw / "task-avatar_bold.json").write_text('{"RepetitionTime": 2}')

    def raw_bold(ses: int, task: str, run: int | None = None, *, annex_link: bool = False):
        func = raw / "sub-UTS01" / f"ses-{ses}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        name = f"sub-UTS01_ses-{ses}_task-{task}" + (f"_run-{run}" if run else "") + "_bold.nii.gz"
        if annex_link:  # a datalad clone without `datalad get`: a dangling git-annex link
            os.symlink("../../../.git/annex/objects/XX/YY/MD5E-s1--0.nii.gz/MD5E-s1--0.nii.gz", func / name)
        else:
            (func / name).write_bytes(b"")
        (func / name.replace(".nii.gz", ".json")).write_text('{"RepetitionTime": 2}')

    raw_bold(1, "CategoryLocalizer", 1)
    raw_bold(2, "avatar", annex_link=True)
    raw_bold(2, "legacy")
    raw_bold(3, "wheretheressmoke", 1)
    raw_bold(3, "wheretheressmoke", 2)
    raw_bold(7, "treasureisland")

    prep = dl / "ds003020-fmriprep" / "sub-UTS01"
    rng = np.random.default_rng(30)
    surf = {}

    def gifti_pair(ses: int, stem: str, space: str, n_vert: int) -> None:
        func = prep / f"ses-{ses}" / "func"
        t = np.arange(n_vols)
        for hemi in ("L", "R"):
            data = rng.normal(0, 1, (n_vert, n_vols)) + 0.5 * t + 50
            data[10242:] = 1e6  # vertices beyond fsaverage5 must be cut away
            surf[(stem, hemi)] = data[:10242].astype(np.float32)
            write_gifti(func / f"{stem}_hemi-{hemi}_space-{space}_bold.func.gii", data)

    gifti_pair(2, "sub-UTS01_ses-2_task-avatar", "fsaverage", 163842)
    write_nifti(prep / "ses-2" / "func" / f"sub-UTS01_ses-2_task-avatar_space-{MNI}_res-2_desc-preproc_bold.nii.gz",
                bold_data(n_vols, 31), tr=2.0)
    func2 = prep / "ses-2" / "func"
    legacy = write_nifti(func2 / f"sub-UTS01_ses-2_task-legacy_space-{MNI}_res-2_desc-preproc_bold.nii.gz",
                         bold_data(n_vols, 32), tr=2.0)
    legacy_mask = write_nifti(func2 / f"sub-UTS01_ses-2_task-legacy_space-{MNI}_res-2_desc-brain_mask.nii.gz",
                              brain_mask(32))
    write_nifti(func2 / "sub-UTS01_ses-2_task-legacy_space-MNI152NLin6Asym_desc-smoothAROMAnonaggr_bold.nii.gz",
                bold_data(2, 33))
    (func2 / "sub-UTS01_ses-2_task-legacy_space-fsLR_den-91k_bold.dtseries.nii").write_bytes(b"\0" * 16)
    volumes = {}
    for run in (1, 2):
        stem = f"sub-UTS01_ses-3_task-wheretheressmoke_run-{run}"
        gifti_pair(3, stem, "fsaverage5", 10242)
        func3 = prep / "ses-3" / "func"
        volumes[run] = (write_nifti(func3 / f"{stem}_space-{MNI}_res-2_desc-preproc_bold.nii.gz",
                                    bold_data(n_vols, 33 + run), tr=2.0),
                        write_nifti(func3 / f"{stem}_space-{MNI}_res-2_desc-brain_mask.nii.gz", brain_mask(33 + run)))
    return {"root": datapath / "Lebel2023Bold", "raw": raw, "prep": prep, "surf": surf, "legacy": legacy,
            "legacy_mask": legacy_mask, "smoke_volumes": volumes, "n_vols": n_vols, "wav_seconds": 3.0}
