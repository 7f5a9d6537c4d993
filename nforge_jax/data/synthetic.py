"""Synthetic features and fMRI with a planted, known encoding (for the demo, tests and benchmarks).

The generative model, per stimulus (a timeline's features, shared by every subject) and per subject:

1. **Features at 2 Hz**, (T, n_layers, dim) per modality, each with its own temporal structure:

   * text: word events (about 2.5 words/s during speech, pauses between speech stretches). Each word
     is a slowly drifting topic vector plus a word-specific vector, deeper layers weighting the topic
     more; a word adds its vector to the 2 Hz bins it overlaps (onset bin ``round(2 * start)``, as
     TRIBE v2 places words), so bins without words are zero.
   * audio: a continuous spectral state (AR(1), about 5 s memory) modulated by a smooth loudness
     envelope with quiet gaps; deeper layers are temporally smoothed.
   * video: shots of about 4 s separated by cuts; a shot shows a scene vector (a third of shots
     return to a recent scene, like shot / reverse shot) plus slow within-shot drift.

   Modalities are generated independently.

2. **Latent drive**: ``u_m(t) = flatten(features_m(t)) @ latent_weights[m]`` (a fixed random linear
   map to ``latent_dims[m]`` dimensions, default 4 per modality, whitened on fixed reference
   stimuli (6 x 300 s) so every latent dimension has about unit variance after step 3).

3. **Hemodynamics**: each latent is convolved (causally, on the 2 Hz grid, zero before the stimulus
   starts) with the Glover (1999) double-gamma HRF,
   ``h(t) = G(t; 6/0.9, 0.9) - 0.48 G(t; 12/0.9, 0.9)`` (G = gamma pdf with shape, scale in s; the
   parameters of nilearn's / nipy's "glover" model; peak at 5.1 s, undershoot near 11 s; 32 s long,
   normalised to sum 1), then sampled at 1 Hz:
   BOLD sample ``j`` is the convolved drive at ``t = j`` s.

4. **Vertices** (fsaverage5, 20,484): ``s_v(t) = sum_m sqrt(w_mv) * r_smv . z_m(t)``, with
   ``w`` the modality mixture (3, V) (columns sum to 1) and ``r_smv`` unit-norm readout vectors
   that vary smoothly over the mesh; each subject's readout is a shared field mixed with a
   subject-specific one (``subject_variability`` of the variance). ``s`` is z-scored per run and
   vertex: the noiseless BOLD, what a perfect model predicts.

5. **Noise**: ``y_v = c_v * s_v + sqrt(1 - c_v^2) * n_v`` with ``n`` unit-variance noise that is
   spatially smooth (mesh diffusion, 4 steps, exactly normalised) plus 30 % spatially white, and
   AR(1) in time (rho 0.3 at 1 Hz, stationary from the first sample). ``y`` is z-scored per run.
   Hence the noise ceiling (the Pearson r between the perfect prediction ``s`` and ``y``) is
   ``c_v = sqrt(snr_v / (1 + snr_v))`` exactly in expectation.

Planted truth with ``modality_map="atlas"`` (HCP-MMP1 areas, both hemispheres): video dominates
visual cortex (V1-V4, V3A/B, V6/V6A, V7, V8, MT, MST, FST, LO1-3, V3CD, PIT, FFC, VVC, VMV1-3, PH),
audio dominates auditory cortex (A1, belt and parabelt, RI, A4, A5, 52, TA2) and text the language
network (44, 45, 47l, IFSa/p, IFJa, 55b, SFL, STS, TPOJ1, PSL, STV, STGa, TGd). Each anchor set is
diffused over the mesh (8 steps) and the modality mixture is a softmax of
``3 * anchor + 0.5 * smooth random field``, so it is smooth and about 0.9 at an anchor's core.
Signal-to-noise: ``snr_v = (0.35 + 2.5 * max_m anchor_m) * exp(0.25 * field) / noise**2``: about
ceiling 0.85 in the anchor areas and 0.5 elsewhere at ``noise=1``; the medial wall (no HCP area)
carries no signal (ceiling 0). ``modality_map="random"`` needs no atlas and uses smooth random
anchor fields instead.

**Subcortical truth** (``space="subcortical"``, the voxels of a `data.subcortical.SubcorticalGrid`): the same
features, latents, HRF, read-outs, noise and repeats, with two changes. Smoothing (anchors, random fields,
noise) diffuses over the 6 face neighbours of each voxel (``S = D^-1 (I + A)``, exactly normalised like the
mesh's) instead of mesh edges. Anchors are structures (:data:`ANCHOR_STRUCTURES`, both sides): thalamus -> video
and audio equally (LGN and MGN relays), caudate and putamen -> audio, hippocampus and amygdala -> text, pallidum
and accumbens -> all three (mixed; the putamen's audio anchor spreads into them, so they lean to audio). The
lateral ventricles carry no signal (ceiling 0, like the medial wall; ``cortex_mask`` is then the mask of voxels
that carry signal). The truth's config and every run's meta record the space (``subcortical_space(grid)
.to_dict()``); a cortical truth records none, so its files are what they were.

Store convention (what :func:`make_synthetic_store` writes): features at 2 Hz from the stimulus start;
``fmri[j]`` is the BOLD at ``j`` s after the start, at 1 Hz (TR 1 s), z-scored per run; meta
``offset_s = 5.0`` means the target paired with feature time ``t`` is ``fmri`` at ``t + 5`` s,
which puts the HRF peak (5.1 s) where the offset expects it.

Repeated presentations (``repeats``): a stimulus shown R times to each subject gives R runs with the
same features and the same noiseless signal and independent noise, so the Pearson r between the perfect
prediction and the mean of the R runs is ``c / sqrt(c^2 + (1 - c^2) / R)``
(:meth:`SyntheticTruth.repeat_mean_ceiling`). Runs of a repeated stimulus carry meta ``repeat`` (1..R) and
are named ``Synthetic:repeat=2,stimulus=stim-01,subject=sub-01`` (the project's sorted-key naming); a stimulus
shown once keeps its name, its meta (no ``repeat`` key) and its arrays, and repeat 1 has the noise of the
single run.

Everything is deterministic from ``seed``; a stimulus's features and a subject's maps do not depend
on how many subjects or timelines are generated.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import scipy.signal
import scipy.stats

from nforge_jax.data import fsaverage
from nforge_jax.data.regions import grid_of_space
from nforge_jax.data.spaces import FSAVERAGE5, SUBCORTICAL, OutputSpace, space_of, subcortical_space
from nforge_jax.data.store import FeatureStore, atomic_open
from nforge_jax.data.timebase import FEATURE_HZ, FMRI_HZ, HEMODYNAMIC_OFFSET_S

__all__ = [
    "MODALITIES",
    "DEFAULT_FEATURE_DIMS",
    "DEFAULT_LATENT_DIMS",
    "ANCHOR_AREAS",
    "ANCHOR_STRUCTURES",
    "SPACES",
    "HRF_DT",
    "SyntheticTruth",
    "SyntheticRun",
    "glover_hrf",
    "make_features",
    "generate_synthetic",
    "make_synthetic_store",
    "TRUTH_FILE",
    "STUDY",
]

MODALITIES = ("text", "audio", "video")
DEFAULT_FEATURE_DIMS = {"text": (2, 64), "audio": (2, 32), "video": (2, 48)}
DEFAULT_LATENT_DIMS = {"text": 4, "audio": 4, "video": 4}
HRF_DT = 1.0 / FEATURE_HZ
HRF_LENGTH_S = 32.0
TRUTH_FILE = "synthetic_truth.npz"
STUDY = "Synthetic"

ANCHOR_AREAS = {
    "text": ("44", "45", "47l", "IFSa", "IFSp", "IFJa", "55b", "SFL", "STSda", "STSdp", "STSva",
             "STSvp", "TPOJ1", "PSL", "STV", "STGa", "TGd"),
    "audio": ("A1", "LBelt", "MBelt", "PBelt", "RI", "A4", "A5", "52", "TA2"),
    "video": ("V1", "V2", "V3", "V4", "V3A", "V3B", "V6", "V6A", "V7", "V8", "MT", "MST", "FST",
              "LO1", "LO2", "LO3", "V3CD", "PIT", "FFC", "VVC", "VMV1", "VMV2", "VMV3", "PH"),
}

# Subcortical anchors (Harvard-Oxford structures, both sides): weight of each modality in a structure's anchor.
# The thalamus relays vision (LGN, pulvinar) and hearing (MGN); the striatum (caudate, putamen) follows sound
# and rhythm; hippocampus and amygdala follow narrative and meaning; pallidum and accumbens answer to all three.
# The lateral ventricles (CSF) carry no signal, like the cortex's medial wall.
ANCHOR_STRUCTURES = {
    "thalamus": {"video": 1.0, "audio": 1.0},
    "caudate": {"audio": 1.0},
    "putamen": {"audio": 1.0},
    "hippocampus": {"text": 1.0},
    "amygdala": {"text": 1.0},
    "pallidum": {"text": 1.0, "audio": 1.0, "video": 1.0},
    "accumbens": {"text": 1.0, "audio": 1.0, "video": 1.0},
}
_NO_SIGNAL_STRUCTURES = ("lateral_ventricle",)
SPACES = (FSAVERAGE5, SUBCORTICAL)

_ANCHOR_SMOOTH_ITERS = 8
_FIELD_SMOOTH_ITERS = 12
_NOISE_SMOOTH_ITERS = 4
_NOISE_WHITE_FRACTION = 0.3
_NOISE_AR = 0.3
# Independent random streams: (seed, stream, ...) so each piece is reproducible on its own.
_S_MAPS, _S_STIM, _S_SUBJECT, _S_NOISE, _S_WEIGHTS, _S_REFERENCE = 0, 1, 2, 3, 4, 5
# Whitening reference: 6 x 300 s, long enough for a stable covariance, independent of the data.
_REFERENCE_S, _REFERENCE_CHUNKS = 300, 6


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *keys])


# --------------------------------------------------------------------------------------------
# HRF
# --------------------------------------------------------------------------------------------


def glover_hrf(times: np.ndarray | None = None) -> np.ndarray:
    """Glover (1999) double-gamma HRF at ``times`` (s), normalised to sum 1 over those times.

    Default times: the 2 Hz feature grid over 32 s (64 taps, ``HRF_DT`` = 0.5 s), the kernel the
    synthetic data are made with. Not nilearn's ``glover_hrf``: that one samples
    ``linspace(0, time_length, n)`` (not a multiple of the step) one sample late, so on this grid it
    differs by up to 3 % of the peak and peaks at 5.5 s; the tests check both are the same curve.
    """
    if times is None:
        times = np.arange(int(HRF_LENGTH_S / HRF_DT)) * HRF_DT
    t = np.asarray(times, np.float64)
    h = scipy.stats.gamma.pdf(t, 6.0 / 0.9, scale=0.9) - 0.48 * scipy.stats.gamma.pdf(t, 12.0 / 0.9, scale=0.9)
    return h / h.sum()


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def _on_off(rng: np.random.Generator, duration: float, mean_on: float, mean_off: float) -> list[tuple[float, float]]:
    """Alternating on / off stretches (exponential lengths); returns the on intervals."""
    spans, t, on = [], 0.0, True
    while t < duration:
        length = (1.0 + rng.exponential(mean_on)) if on else (0.5 + rng.exponential(mean_off))
        if on:
            spans.append((t, min(duration, t + length)))
        t += length
        on = not on
    return spans


def _ar1(rng: np.random.Generator, n: int, dim: int, rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) process, (n, dim)."""
    e = rng.standard_normal((n, dim))
    e[1:] *= np.sqrt(1.0 - rho * rho)
    return scipy.signal.lfilter([1.0], [1.0, -rho], e, axis=0)


def _layer_mix(n_layers: int) -> np.ndarray:
    # Deeper layers weight the slow / contextual component more, as deep network layers do.
    return np.linspace(0.4, 0.85, n_layers) if n_layers > 1 else np.array([0.6])


def _text_features(rng: np.random.Generator, n_bins: int, n_layers: int, dim: int) -> np.ndarray:
    duration = n_bins / FEATURE_HZ
    out = np.zeros((n_bins, n_layers, dim), np.float64)
    lam = _layer_mix(n_layers)
    topic = rng.standard_normal(dim)
    for start, stop in _on_off(rng, duration, mean_on=15.0, mean_off=3.0):
        t = start + rng.exponential(0.2)
        while t < stop:
            gap = rng.gamma(4.0, 0.1)  # mean 0.4 s between word onsets
            word_dur = min(0.8 * gap, 0.15 + rng.exponential(0.15))
            topic = 0.97 * topic + np.sqrt(1 - 0.97**2) * rng.standard_normal(dim)
            word = rng.standard_normal(dim)
            vec = np.sqrt(lam)[:, None] * topic[None] + np.sqrt(1 - lam)[:, None] * word[None]
            k0 = round(FEATURE_HZ * t)  # TRIBE v2's bin placement (Python round)
            n = max(1, round(FEATURE_HZ * word_dur))
            out[k0 : min(n_bins, k0 + n)] += vec
            t += gap
    return out


def _audio_features(rng: np.random.Generator, n_bins: int, n_layers: int, dim: int) -> np.ndarray:
    duration = n_bins / FEATURE_HZ
    env = np.log1p(np.exp(1.0 + _ar1(rng, n_bins, 1, 0.8)[:, 0]))  # softplus loudness
    quiet = np.full(n_bins, 0.1)
    for start, stop in _on_off(rng, duration, mean_on=20.0, mean_off=2.0):
        quiet[int(start * FEATURE_HZ) : int(np.ceil(stop * FEATURE_HZ))] = 1.0
    env = env * quiet
    spec = _ar1(rng, n_bins, dim, 0.9)
    base = env[:, None] * spec
    out = np.empty((n_bins, n_layers, dim))
    for i, lam in enumerate(np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else [0.0]):
        # Exponential smoothing with a time constant growing with depth (up to 1.5 s).
        a = np.exp(-1.0 / (1.0 + 2.0 * FEATURE_HZ * 1.5 * lam)) if lam > 0 else 0.0
        smooth = scipy.signal.lfilter([1.0 - a], [1.0, -a], base, axis=0) if a else base
        out[:, i] = smooth + 0.3 * rng.standard_normal((n_bins, dim))
    return out


def _video_features(rng: np.random.Generator, n_bins: int, n_layers: int, dim: int) -> np.ndarray:
    lam = _layer_mix(n_layers)
    scene_of_bin = np.empty((n_bins, dim))
    recent: list[np.ndarray] = []
    k = 0
    while k < n_bins:
        shot = max(2, int(round(FEATURE_HZ * (1.0 + rng.gamma(2.0, 1.5)))))  # mean ~4 s
        if recent and rng.random() < 0.35:
            scene = recent[rng.integers(len(recent))]
        else:
            scene = rng.standard_normal(dim)
            recent = (recent + [scene])[-3:]
        scene_of_bin[k : k + shot] = scene
        k += shot
    drift = _ar1(rng, n_bins, dim, 0.95)
    out = np.empty((n_bins, n_layers, dim))
    for i in range(n_layers):
        out[:, i] = (np.sqrt(lam[i]) * scene_of_bin + np.sqrt(1 - lam[i]) * drift
                     + 0.2 * rng.standard_normal((n_bins, dim)))
    return out


_FEATURE_MAKERS = {"text": _text_features, "audio": _audio_features, "video": _video_features}


def make_features(
    duration_s: float,
    *,
    feature_dims: Mapping[str, tuple[int, int]] | None = None,
    seed: int = 0,
    stimulus: int = 0,
) -> dict[str, np.ndarray]:
    """Features of one synthetic stimulus: ``{modality: (round(2 * duration_s), n_layers, dim)}``
    float32 at 2 Hz (see the module docstring for their structure)."""
    dims = _check_feature_dims(feature_dims)
    n_bins = int(round(FEATURE_HZ * _check_duration(duration_s)))
    return {
        mod: _FEATURE_MAKERS[mod](_rng(seed, _S_STIM, stimulus, m), n_bins, *dims[mod]).astype(np.float32)
        for m, mod in enumerate(MODALITIES)
    }


# --------------------------------------------------------------------------------------------
# Truth
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticTruth:
    """The planted encoding. Vertex arrays are in whole-cortex order (left then right).

    modality_weights (3, V): fraction of each vertex's signal variance from text, audio, video.
    snr (V,), noise_ceiling (V,): ``noise_ceiling = sqrt(snr / (1 + snr))``, the expected Pearson r
    between the noiseless signal and the stored target. cortex_mask (V,): vertices (voxels) that carry signal.
    hrf (64,): the kernel on the 2 Hz grid (``HRF_DT`` s per tap). latent_weights: modality ->
    (n_layers * dim, latent_dim). readouts (n_subjects, sum(latent_dims), V): per subject, the
    sqrt(weight)-scaled readout of the stacked latents. timelines: one dict per stored run
    (name, subject, stimulus index).
    """

    modality_weights: np.ndarray
    snr: np.ndarray
    noise_ceiling: np.ndarray
    cortex_mask: np.ndarray
    hrf: np.ndarray
    latent_weights: dict
    readouts: np.ndarray
    timelines: tuple
    config: dict

    modalities = MODALITIES

    @property
    def space(self) -> OutputSpace:
        """The output space of the truth's arrays (config ``space``; a cortical truth records none)."""
        return space_of(self.config.get("space"), self.noise_ceiling.shape[0], "synthetic truth")

    @property
    def subjects(self) -> list[str]:
        return [_subject_name(s) for s in range(self.readouts.shape[0])]

    def latents(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Hemodynamic latents at 1 Hz, (n_1Hz, sum(latent_dims)), from one stimulus's features."""
        zs = []
        for mod in MODALITIES:
            f = np.asarray(features[mod])
            w = self.latent_weights[mod]
            if f.ndim != 3 or f.shape[1] * f.shape[2] != w.shape[0]:
                raise ValueError(f"features[{mod!r}]: expected (T, L, D) with L*D = {w.shape[0]}, got {f.shape}")
            u = (f.reshape(f.shape[0], -1).astype(np.float32) @ w.astype(np.float32)).astype(np.float64)
            zs.append(scipy.signal.lfilter(self.hrf, [1.0], u, axis=0)[:: int(FEATURE_HZ / FMRI_HZ)])
        n = min(z.shape[0] for z in zs)
        return np.concatenate([z[:n] for z in zs], axis=1)

    def noiseless_bold(self, features: Mapping[str, np.ndarray], subject: int | str) -> np.ndarray:
        """The perfect prediction for ``subject`` watching ``features``: (n_1Hz, V) float32,
        z-scored per vertex (ahead of the 5 s offset, like the stored fMRI)."""
        s = self._subject_index(subject)
        return _zscore(self.latents(features) @ self.readouts[s].astype(np.float64)).astype(np.float32)

    def repeat_mean_ceiling(self, n_repeats) -> np.ndarray:
        """(V,) the expected Pearson r between the perfect prediction and the mean of ``n_repeats`` runs:
        ``c / sqrt(c^2 + (1 - c^2) / R)`` with ``c`` the single-run :attr:`noise_ceiling` (the noise of
        the runs is independent, so averaging R runs divides its variance by R)."""
        if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
            raise ValueError(f"n_repeats: expected an int >= 1, got {n_repeats!r}")
        c = self.noise_ceiling.astype(np.float64)
        denom = np.sqrt(c * c + (1.0 - c * c) / int(n_repeats))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, c / np.where(denom > 0, denom, 1.0), 0.0)

    def _subject_index(self, subject: int | str) -> int:
        n = self.readouts.shape[0]
        if isinstance(subject, str):
            names = self.subjects
            if subject not in names:
                raise ValueError(f"subject: expected one of {names}, got {subject!r}")
            return names.index(subject)
        if not 0 <= int(subject) < n:
            raise ValueError(f"subject: expected 0..{n - 1}, got {subject}")
        return int(subject)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to an ``.npz`` (atomic; plain arrays and a JSON string, loadable without pickle)."""
        path = Path(path)
        arrays = {
            "modality_weights": self.modality_weights, "snr": self.snr, "noise_ceiling": self.noise_ceiling,
            "cortex_mask": self.cortex_mask, "hrf": self.hrf, "readouts": self.readouts,
            **{f"latent_weights.{m}": w for m, w in self.latent_weights.items()},
            "info": np.array(json.dumps({"timelines": list(self.timelines), "config": self.config})),
        }
        with atomic_open(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticTruth":
        """Read what :meth:`save` wrote (or a store made by :func:`make_synthetic_store`)."""
        path = Path(path)
        if path.is_dir():
            path = path / TRUTH_FILE
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a synthetic-truth file ({e})") from None
        required = ("modality_weights", "snr", "noise_ceiling", "cortex_mask", "hrf", "readouts", "info")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; expected a file written by SyntheticTruth.save")
        info = json.loads(str(data.pop("info")))
        lw = {m: data.pop(f"latent_weights.{m}") for m in MODALITIES}
        return cls(latent_weights=lw, timelines=tuple(info["timelines"]), config=info["config"],
                   **{k: data[k] for k in required if k != "info"})


@dataclasses.dataclass(frozen=True)
class SyntheticRun:
    """One subject's run over one stimulus: what a FeatureStore timeline holds, plus the
    noiseless signal. features: modality -> (2 * duration_s, L, D) float32; fmri, signal:
    (duration_s, V) float32, z-scored per vertex (fmri[j] = BOLD at j s)."""

    name: str
    subject: str
    stimulus: int
    features: dict
    fmri: np.ndarray
    signal: np.ndarray
    meta: dict
    repeat: int = 1


def _subject_name(s: int) -> str:
    return f"sub-{s + 1:02d}"


def _stimulus_name(i: int) -> str:
    return f"stim-{i + 1:02d}"


def _timeline_name(s: int, i: int, repeat: int | None = None) -> str:
    # The project's "Study:key=value,..." timeline naming (keys sorted), as the study readers write.
    first = "" if repeat is None else f"repeat={repeat},"
    return f"{STUDY}:{first}stimulus={_stimulus_name(i)},subject={_subject_name(s)}"


def _check_repeats(repeats, n_timelines: int) -> dict[int, int]:
    """{stimulus index: presentations} from an int (every stimulus) or {stimulus index: R} (others once)."""
    def count(value, where):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{where}: expected an int >= 1 (presentations of a stimulus), got {value!r}")
        return int(value)

    if isinstance(repeats, Mapping):
        out = dict.fromkeys(range(n_timelines), 1)
        for key, value in repeats.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < n_timelines:
                raise ValueError(f"repeats: stimulus index {key!r} is not in 0..{n_timelines - 1}")
            out[int(key)] = count(value, f"repeats[{key}]")
        return out
    return dict.fromkeys(range(n_timelines), count(repeats, "repeats"))


def _presentations(n_subjects: int, repeats: Mapping[int, int]) -> Iterator[tuple[int, int, int | None]]:
    """(stimulus, subject, repeat or None for a stimulus shown once), stimulus-major."""
    for i, n in repeats.items():
        for s in range(n_subjects):
            for r in ([None] if n == 1 else range(1, n + 1)):
                yield i, s, r


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return x / np.where(sd > 0, sd, 1.0)


def _check_duration(duration_s) -> float:
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not duration_s >= 10:
        raise ValueError(f"duration_s: expected a number of seconds >= 10, got {duration_s!r}")
    if float(duration_s) != int(duration_s):
        raise ValueError(f"duration_s: expected whole seconds (1 Hz fMRI), got {duration_s!r}")
    return float(duration_s)


def _check_feature_dims(feature_dims) -> dict[str, tuple[int, int]]:
    dims = dict(DEFAULT_FEATURE_DIMS)
    if feature_dims is not None:
        unknown = set(feature_dims) - set(MODALITIES)
        if unknown:
            raise ValueError(f"feature_dims: unknown modalities {sorted(unknown)}; expected keys from {MODALITIES}")
        for mod, v in feature_dims.items():
            if (not isinstance(v, (tuple, list)) or len(v) != 2
                    or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1 for x in v)):
                raise ValueError(f"feature_dims[{mod!r}]: expected (n_layers, dim) positive ints, got {v!r}")
            dims[mod] = (int(v[0]), int(v[1]))
    return dims


def _check_latent_dims(latent_dims, feature_dims) -> dict[str, int]:
    dims = dict(DEFAULT_LATENT_DIMS)
    if latent_dims is not None:
        unknown = set(latent_dims) - set(MODALITIES)
        if unknown:
            raise ValueError(f"latent_dims: unknown modalities {sorted(unknown)}; expected keys from {MODALITIES}")
        dims.update({m: v for m, v in latent_dims.items()})
    for mod, k in dims.items():
        n_in = feature_dims[mod][0] * feature_dims[mod][1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_in:
            raise ValueError(f"latent_dims[{mod!r}]: expected an int in 1..{n_in} (n_layers * dim), got {k!r}")
        dims[mod] = int(k)
    return dims


class _Mesh:
    """Smoothing on a cortical mesh (diffusion over mesh edges), the cortical synthetic data's geometry."""

    def __init__(self, mesh: str):
        self.mesh = mesh
        self.n = fsaverage.n_vertices(mesh)

    def smooth(self, data: np.ndarray, n_iter: int) -> np.ndarray:
        return fsaverage.smooth(data, n_iter, mesh=self.mesh, axis=-1)

    def random_field(self, rng: np.random.Generator, n_fields: int, n_iter: int) -> np.ndarray:
        return fsaverage.smooth_random_field(rng, n_fields, n_iter, mesh=self.mesh)


class _Voxels:
    """The same smoothing over the 6 face neighbours of a voxel grid (`data.subcortical.SubcorticalGrid`):
    ``S = D^-1 (I + A)`` with ``A`` the voxels' face adjacency, so fields never leak outside the grid."""

    def __init__(self, grid):
        import scipy.sparse as sp

        self.grid = grid
        ijk = np.asarray(grid.ijk, np.int64)
        shape = np.asarray(grid.shape, np.int64)
        self.n = len(ijk)
        flat = np.ravel_multi_index(ijk.T, tuple(shape))
        order = np.argsort(flat)
        rows, cols = [], []
        for axis in range(3):
            step = np.zeros(3, np.int64)
            step[axis] = 1
            nb = ijk + step
            inside = nb[:, axis] < shape[axis]
            key = np.ravel_multi_index(np.where(inside[:, None], nb, 0).T, tuple(shape))
            pos = np.clip(np.searchsorted(flat[order], key), 0, self.n - 1)
            hit = inside & (flat[order][pos] == key)
            rows.append(np.flatnonzero(hit))
            cols.append(order[pos[hit]])
        r, c = np.concatenate(rows), np.concatenate(cols)
        a = sp.coo_matrix((np.ones(2 * len(r), np.float32), (np.r_[r, c], np.r_[c, r])), shape=(self.n, self.n))
        m = (a + sp.identity(self.n, dtype=np.float32)).tocsr()
        deg = np.asarray(m.sum(axis=1)).ravel()
        self.operator = (sp.diags((1.0 / deg).astype(np.float32)) @ m).tocsr().astype(np.float32)
        self._norms: dict[int, np.ndarray] = {}

    def smooth(self, data: np.ndarray, n_iter: int) -> np.ndarray:
        x = np.ascontiguousarray(np.moveaxis(np.asarray(data), -1, 0), dtype=np.float32)
        shape = x.shape
        x = x.reshape(self.n, -1)
        for _ in range(n_iter):
            x = self.operator @ x
        return np.moveaxis(x.reshape(shape), 0, -1)

    def _row_norms(self, n_iter: int) -> np.ndarray:
        """L2 norm of each row of S**n_iter (the std of smoothed unit white noise), S**n_iter by repeated
        squaring (float32: the norms agree with float64 to 1e-7; about 1.5 s for 12 steps on 8,803 voxels)."""
        if n_iter not in self._norms:
            power, base, k = None, self.operator, int(n_iter)
            while k:
                if k & 1:
                    power = base if power is None else (power @ base).tocsr()
                k >>= 1
                if k:
                    base = (base @ base).tocsr()
            if power is None:
                self._norms[n_iter] = np.ones(self.n)
            else:
                self._norms[n_iter] = np.sqrt(np.asarray(power.multiply(power).sum(axis=1), np.float64).ravel())
        return self._norms[n_iter]

    def random_field(self, rng: np.random.Generator, n_fields: int, n_iter: int) -> np.ndarray:
        out = self.smooth(rng.standard_normal((n_fields, self.n), dtype=np.float32), n_iter)
        out /= self._row_norms(n_iter).astype(np.float32)
        return out


def _anchor_fields(seed: int, geometry, modality_map: str, source) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed anchors (3, V) in [0, 1] and the mask of outputs that carry signal (V,)."""
    v = geometry.n
    if modality_map == "atlas" and isinstance(geometry, _Voxels):
        ind, cortex = _structure_anchors(geometry.grid)
    elif modality_map == "atlas":
        mesh = geometry.mesh
        labels = fsaverage.get_hcp_labels(mesh, source)
        cortex = np.zeros(v, bool)
        for idx in labels.values():
            cortex[idx] = True
        ind = np.zeros((3, v), np.float32)
        for m, mod in enumerate(MODALITIES):
            ind[m, fsaverage.hcp_roi_indices(list(ANCHOR_AREAS[mod]), mesh, source)] = 1.0
    elif modality_map == "random":
        cortex = np.ones(v, bool)
        field = geometry.random_field(_rng(seed, _S_MAPS, 0), 3, _FIELD_SMOOTH_ITERS)
        ind = (field > 1.0).astype(np.float32)  # about 16 % of the outputs per modality
    else:
        raise ValueError(f"modality_map: expected 'atlas' or 'random', got {modality_map!r}")
    soft = geometry.smooth(ind, _ANCHOR_SMOOTH_ITERS)
    peak = np.maximum(soft.max(axis=1, keepdims=True), 1e-6)
    return np.clip(soft / peak, 0.0, 1.0), cortex


def _structure_anchors(grid) -> tuple[np.ndarray, np.ndarray]:
    """Indicator anchors (3, V) of :data:`ANCHOR_STRUCTURES` on the grid and its signal mask (no ventricles)."""
    ind = np.zeros((3, grid.n_voxels), np.float32)
    for structure, mix in ANCHOR_STRUCTURES.items():
        idx = grid.structure_indices(structure)
        for mod, weight in mix.items():
            ind[MODALITIES.index(mod), idx] = weight
    signal = np.ones(grid.n_voxels, bool)
    signal[grid.structure_indices(list(_NO_SIGNAL_STRUCTURES))] = False
    return ind, signal


def generate_synthetic(
    *,
    n_subjects: int = 2,
    n_timelines: int = 4,
    duration_s: float = 300,
    feature_dims: Mapping[str, tuple[int, int]] | None = None,
    latent_dims: Mapping[str, int] | None = None,
    noise: float = 1.0,
    subject_variability: float = 0.1,
    seed: int = 0,
    mesh: str = "fsaverage5",
    modality_map: str = "atlas",
    source: str | os.PathLike | None = None,
    repeats: int | Mapping[int, int] = 1,
    space: str | None = None,
    grid=None,
) -> tuple[SyntheticTruth, Iterator[SyntheticRun]]:
    """The pure array generator: the planted truth and a lazy iterator over the runs.

    Every subject sees the same ``n_timelines`` stimuli of ``duration_s`` seconds; runs come
    stimulus by stimulus, one in memory at a time, named
    ``Synthetic:stimulus=stim-01,subject=sub-01``, ``Synthetic:stimulus=stim-01,subject=sub-02``, ...
    (study ``Synthetic``; meta ``stimulus`` lets a train/val split hold out whole stimuli).
    ``repeats``: presentations per stimulus and subject, an int for every stimulus or
    ``{stimulus index: R}`` (the others once); see the module docstring for names and noise.
    ``noise`` scales the noise std (0: noiseless cortex). ``source`` is passed to
    :func:`fsaverage.get_hcp_labels` for ``modality_map="atlas"``.
    ``space``: None or "fsaverage5" (the cortex of ``mesh``) or "subcortical": the voxels of ``grid`` (a
    `data.subcortical.SubcorticalGrid`, default ``load_grid()``), anchored on structures
    (:data:`ANCHOR_STRUCTURES`) and smoothed over face-neighbour voxels; its runs' meta record the space.
    """
    for name, val in (("n_subjects", n_subjects), ("n_timelines", n_timelines), ("seed", seed)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < (0 if name == "seed" else 1):
            raise ValueError(f"{name}: expected an int >= {0 if name == 'seed' else 1}, got {val!r}")
    duration_s = _check_duration(duration_s)
    fdims = _check_feature_dims(feature_dims)
    ldims = _check_latent_dims(latent_dims, fdims)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    if not isinstance(subject_variability, (int, float)) or not 0 <= subject_variability <= 1:
        raise ValueError(f"subject_variability: expected a number in [0, 1], got {subject_variability!r}")
    n_shown = _check_repeats(repeats, int(n_timelines))
    geometry, space_dict = _check_space(space, mesh, grid)
    weights, snr, ceiling, cortex = _modality_and_snr_maps(seed, geometry, modality_map, source, noise)
    hrf = glover_hrf()
    latent_weights = _latent_weights(seed, fdims, ldims, hrf)
    readouts = _readouts(seed, n_subjects, ldims, weights, subject_variability, geometry)
    config = dict(n_subjects=int(n_subjects), n_timelines=int(n_timelines), duration_s=duration_s,
                  feature_dims={k: list(x) for k, x in fdims.items()}, latent_dims=ldims, noise=float(noise),
                  subject_variability=float(subject_variability), seed=int(seed), mesh=mesh,
                  modality_map=modality_map, feature_hz=FEATURE_HZ, fmri_hz=FMRI_HZ,
                  offset_s=HEMODYNAMIC_OFFSET_S, hrf="glover1999 double gamma, 0.5 s taps, 32 s")
    if any(n > 1 for n in n_shown.values()):  # recorded only when used: single-presentation outputs unchanged
        config["repeats"] = {str(i): n for i, n in n_shown.items()}
    if space_dict is not None:  # the cortex's config (and files) stay as they were
        config["space"], config["mesh"] = space_dict, None
    timelines = tuple({"name": _timeline_name(s, i, r), "subject": _subject_name(s), "stimulus": i,
                       **({} if r is None else {"repeat": r})}
                      for i, s, r in _presentations(int(n_subjects), n_shown))
    truth = SyntheticTruth(modality_weights=weights, snr=snr.astype(np.float32), noise_ceiling=ceiling,
                           cortex_mask=cortex, hrf=hrf.astype(np.float32), latent_weights=latent_weights,
                           readouts=readouts, timelines=timelines, config=config)
    return truth, _runs(truth, fdims, geometry)


_VOXEL_GEOMETRIES: dict = {}


def _check_space(space, mesh, grid):
    """(smoothing geometry, the space's dict for a subcortical truth, else None)."""
    if space is None or (space == FSAVERAGE5 and mesh == "fsaverage5"):
        if grid is not None:
            raise ValueError("grid: only used with space='subcortical'")
        return _Mesh(mesh), None
    if space != SUBCORTICAL:
        raise ValueError(f"space: expected None, 'fsaverage5' (with mesh='fsaverage5') or 'subcortical', "
                         f"got {space!r}")
    if grid is None:
        from nforge_jax.data.subcortical import load_grid

        grid = load_grid()
    space = subcortical_space(grid)
    key = space.key()
    if key not in _VOXEL_GEOMETRIES:  # the smoothing norms cost a second or two: once per grid and process
        _VOXEL_GEOMETRIES.clear()
        _VOXEL_GEOMETRIES[key] = _Voxels(grid)
    return _VOXEL_GEOMETRIES[key], space.to_dict()


def _modality_and_snr_maps(seed, geometry, modality_map, source, noise):
    """(modality mixture (3, V) float32, snr (V,), noise ceiling (V,) float32, cortex mask (V,))."""
    anchors, cortex = _anchor_fields(seed, geometry, modality_map, source)
    jitter = geometry.random_field(_rng(seed, _S_MAPS, 1), 4, _FIELD_SMOOTH_ITERS)
    logits = 3.0 * anchors + 0.5 * jitter[:3]
    weights = np.exp(logits - logits.max(axis=0))
    weights = (weights / weights.sum(axis=0)).astype(np.float32)
    base_snr = (0.35 + 2.5 * anchors.max(axis=0)) * np.exp(0.25 * jitter[3])
    with np.errstate(divide="ignore"):
        snr = np.where(cortex, base_snr / (noise**2) if noise > 0 else np.inf, 0.0)
    ceiling = np.where(np.isinf(snr), 1.0, np.sqrt(snr / (1.0 + np.where(np.isinf(snr), 0.0, snr))))
    return weights, snr, ceiling.astype(np.float32), cortex


def _latent_weights(seed, fdims, ldims, hrf) -> dict[str, np.ndarray]:
    """Feature -> latent maps per modality, whitened on a reference stimulus (so they do not depend on
    n_timelines)."""
    latent_weights = {}
    for m, mod in enumerate(MODALITIES):
        n_in = fdims[mod][0] * fdims[mod][1]
        w = _rng(seed, _S_WEIGHTS, m).standard_normal((n_in, ldims[mod])) / np.sqrt(n_in)
        zs = []
        for c in range(_REFERENCE_CHUNKS):  # chunks keep memory low at full feature sizes
            ref = _FEATURE_MAKERS[mod](_rng(seed, _S_REFERENCE, m, c), int(FEATURE_HZ * _REFERENCE_S), *fdims[mod])
            z = scipy.signal.lfilter(hrf, [1.0], ref.reshape(ref.shape[0], -1) @ w, axis=0)
            zs.append(z[int(FEATURE_HZ * HRF_LENGTH_S):])  # past the start-up transient
        z = np.concatenate(zs)
        cov = np.cov(z, rowvar=False).reshape(ldims[mod], ldims[mod])
        evals, evecs = np.linalg.eigh(cov)
        w = w @ (evecs @ np.diag(1.0 / np.sqrt(np.maximum(evals, 1e-12))) @ evecs.T)
        latent_weights[mod] = w
    return latent_weights


def _readouts(seed, n_subjects, ldims, weights, subject_variability, geometry) -> np.ndarray:
    """Per-subject readouts (n_subjects, n_latents, V): unit-norm per vertex and modality, scaled by
    sqrt(weight)."""
    v = geometry.n
    shared = {mod: geometry.random_field(_rng(seed, _S_MAPS, 10 + m), ldims[mod], _FIELD_SMOOTH_ITERS)
              for m, mod in enumerate(MODALITIES)}
    readouts = np.empty((n_subjects, sum(ldims.values()), v), np.float32)
    for s in range(n_subjects):
        rows = []
        for m, mod in enumerate(MODALITIES):
            own = geometry.random_field(_rng(seed, _S_SUBJECT, s, m), ldims[mod], _FIELD_SMOOTH_ITERS)
            r = np.sqrt(1 - subject_variability) * shared[mod] + np.sqrt(subject_variability) * own
            r /= np.maximum(np.linalg.norm(r, axis=0, keepdims=True), 1e-12)
            rows.append(np.sqrt(weights[m])[None] * r)
        readouts[s] = np.concatenate(rows)
    return readouts


def _runs(truth: SyntheticTruth, fdims, geometry) -> Iterator[SyntheticRun]:
    """The runs of ``truth``'s timelines, stimulus-major: one stimulus's features in memory at a time."""
    cfg = truth.config
    seed, mesh, noise = cfg["seed"], cfg["mesh"], cfg["noise"]
    where = {"mesh": mesh} if "space" not in cfg else {"space": cfg["space"]}
    a = truth.noise_ceiling.astype(np.float64)
    b = np.sqrt(np.clip(1.0 - a * a, 0.0, 1.0))
    n_shown = {int(i): n for i, n in cfg.get("repeats", {}).items()} or dict.fromkeys(range(cfg["n_timelines"]), 1)
    feats, signals = None, {}
    for i, s, r in _presentations(cfg["n_subjects"], n_shown):
        if feats is None or feats[0] != i:
            feats, signals = (i, make_features(cfg["duration_s"], feature_dims=fdims, seed=seed, stimulus=i)), {}
        if s not in signals:  # the repeats of a stimulus share the subject's noiseless signal
            signals[s] = truth.noiseless_bold(feats[1], s)
        signal = signals[s]
        # repeat 1 draws the noise of a single presentation; later repeats their own streams
        eps = _noise(_rng(seed, _S_NOISE, s, i, *([] if (r or 1) == 1 else [r - 1])), signal.shape[0], geometry)
        fmri = _zscore(a * signal + b * eps).astype(np.float32)
        meta = {
            "study": STUDY, "subject": _subject_name(s), "stimulus": _stimulus_name(i),
            **({} if r is None else {"repeat": r}),
            "tr_s": 1.0 / FMRI_HZ, "feature_hz": FEATURE_HZ, "fmri_hz": FMRI_HZ,
            "offset_s": HEMODYNAMIC_OFFSET_S, **where,
            "extractors": {mod: {"model_id": f"nforge_jax.synthetic.{mod}", "layer_fractions": None,
                                 "aggregation": None, "n_layers": fdims[mod][0], "dim": fdims[mod][1]}
                           for mod in MODALITIES},
            "synthetic": {"seed": int(seed), "noise": float(noise)},
        }
        yield SyntheticRun(name=_timeline_name(s, i, r), subject=_subject_name(s), stimulus=i,
                           features=feats[1], fmri=fmri, signal=signal, meta=meta, repeat=r or 1)


def _noise(rng: np.random.Generator, n: int, geometry) -> np.ndarray:
    """(n, V) unit-variance noise: spatially smooth + white, AR(1) in time, stationary."""
    v = geometry.n
    e = geometry.random_field(rng, n, _NOISE_SMOOTH_ITERS)
    e *= np.sqrt(1.0 - _NOISE_WHITE_FRACTION)
    e += np.sqrt(_NOISE_WHITE_FRACTION) * rng.standard_normal((n, v), dtype=np.float32)
    e[1:] *= np.sqrt(1.0 - _NOISE_AR**2)
    return scipy.signal.lfilter([1.0], [1.0, -_NOISE_AR], e, axis=0)


def make_synthetic_store(path: str | os.PathLike, **settings) -> SyntheticTruth:
    """Write a synthetic FeatureStore at ``path`` (new or empty directory) and return the truth.

    ``settings``: those of :func:`generate_synthetic` (n_subjects, n_timelines, duration_s, noise, seed...).
    One timeline per (subject, stimulus, presentation), named ``Synthetic:stimulus=stim-01,subject=sub-01``...
    (``Synthetic:repeat=2,...`` for the runs of a repeated stimulus, see ``repeats``); the truth is
    also saved in the store directory as ``synthetic_truth.npz`` (read it back with ``SyntheticTruth.load(path)``).
    """
    truth, runs = generate_synthetic(**settings)
    store = FeatureStore.create(path)
    for run in runs:
        store.write_timeline(run.name, features=run.features, fmri=run.fmri, meta=run.meta)
    truth.save(Path(path) / TRUTH_FILE)
    return truth
