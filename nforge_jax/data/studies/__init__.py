"""Readers for the four fMRI studies TRIBE v2 trains on, from their published on-disk layouts.

Each reader lists its timelines (one fMRI run each), builds the run's events table (Video/Audio/Text/
Word/Phoneme/Fmri rows, TRIBE's columns) and its fMRI target on fsaverage5 at 1 Hz, and
:func:`build_study_store` writes them into a FeatureStore, one run at a time::

    from nforge_jax.data.studies import build_study_store, get_study
    summary = build_study_store("Wen2017", "$DATAPATH", "stores/wen2017")
    study = get_study("Lebel2023Bold", "$DATAPATH")
    for timeline in study.iter_timelines():
        events, fmri = study.load_timeline(timeline)      # fmri: (n_1Hz, 20484) float32

With ``space="subcortical"`` (``get_study(..., grid=load_grid())``) the targets are TRIBE v2's subcortical
voxels, read from each run's MNI volume: ``build_study_store("Wen2017", root, store, space="subcortical")``.

| study | subjects | timelines | TR (s) |
|---|---|---|---|
| Algonauts2025Bold (CNeuroMod Friends + Movie10) | sub-01, 02, 03, 05 | 1588 | 1.49 |
| Wen2017 | subject1-3 | 258 | 2.0 |
| Lahner2024Bold (BOLD Moments) | 1-10 | 520 | 1.75 |
| Lebel2023Bold (ds003020) | UTS01-08 | 432 | 2.0 |
"""

from nforge_jax.data.studies.algonauts2025 import Algonauts2025Bold
from nforge_jax.data.studies.base import MissingStudyFile, Study, StudyDataError, timeline_name
from nforge_jax.data.studies.build import STUDIES, build_study_store, events_from_meta, events_to_meta, get_study
from nforge_jax.data.studies.lahner2024 import Lahner2024Bold
from nforge_jax.data.studies.lebel2023 import Lebel2023Bold
from nforge_jax.data.studies.wen2017 import Wen2017

__all__ = [
    "Study",
    "StudyDataError",
    "MissingStudyFile",
    "timeline_name",
    "Algonauts2025Bold",
    "Wen2017",
    "Lahner2024Bold",
    "Lebel2023Bold",
    "STUDIES",
    "get_study",
    "build_study_store",
    "events_to_meta",
    "events_from_meta",
]
