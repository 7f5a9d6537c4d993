"""The TRIBE v2 target pipeline written directly with nilearn and numpy, as the tests' reference."""

import nibabel
import nilearn.signal
import numpy as np
from nilearn import datasets
from nilearn.surface import vol_to_surf


def project(bold_path, mask_path=None):
    img = nibabel.load(str(bold_path))
    data = img.get_fdata()
    if mask_path is not None:
        data = data * nibabel.load(str(mask_path)).get_fdata().astype(bool)[..., None]
    masked = nibabel.Nifti1Image(data, img.affine)
    fs = datasets.fetch_surf_fsaverage("fsaverage5")
    return np.vstack([vol_to_surf(masked, fs[f"pial_{h}"], inner_mesh=fs[f"white_{h}"], kind="ball", radius=3,
                                  interpolation="linear") for h in ("left", "right")])


def clean_resample(surface, tr):
    """(V, T) -> (n_1Hz, V): nilearn.signal.clean, then np.interp per vertex onto neuralset's 1 Hz grid."""
    cleaned = nilearn.signal.clean(surface.T, detrend=True, standardize="zscore_sample", ensure_finite=True,
                                   t_r=tr)
    n = cleaned.shape[0]
    trs = np.arange(n) * tr
    new = np.arange(0, trs[-1] + tr - 1, step=1.0)
    return np.stack([np.interp(new, trs, cleaned[:, v], right=cleaned[-1, v]) for v in range(cleaned.shape[1])],
                    axis=1)


def volume_target(bold_path, mask_path, tr):
    return clean_resample(project(bold_path, mask_path), tr)
