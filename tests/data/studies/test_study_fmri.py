"""fMRI -> fsaverage5 targets: projection, surface truncation, cleaning, resampling, file errors."""

import gzip

import nibabel
import numpy as np

from nforge_jax.data.targets import resample_times
import pytest

import study_reference as ref
import study_replicas as replicas
from nforge_jax.data.studies import fmri


def test_constant_volume_projects_to_constant_surface():
    # inside the mask everywhere the cortex samples, a constant c must give c at every vertex
    data = replicas.bold_data(3, 0, constant=2.5)
    mask = np.ones(replicas.SHAPE, bool)
    mask[0, 0, 0] = False  # far from the cortex
    surf = fmri.project_volume(data, replicas.AFFINE, mask)
    assert surf.shape == (20484, 3)
    np.testing.assert_allclose(surf, 2.5, rtol=1e-6)


def test_projection_equals_nilearn_vol_to_surf(tmp_path):
    data = replicas.bold_data(4, 7)
    mask = replicas.brain_mask(7)
    bold = replicas.write_nifti(tmp_path / "bold.nii.gz", data)
    mpath = replicas.write_nifti(tmp_path / "mask.nii.gz", mask)
    expected = ref.project(bold, mpath)
    got = fmri.project_volume(*fmri.load_volume(bold, mpath))
    assert got.shape == expected.shape == (20484, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # the mask matters: without it the values differ
    unmasked = fmri.project_volume(data, replicas.AFFINE, None)
    assert np.abs(unmasked - got).max() > 1.0


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_projection_outside_image_is_nan_like_nilearn():
    # a grid that covers only the left half of MNI x: right-hemisphere vertices see no voxel
    affine = replicas.AFFINE.copy()
    affine[0, 3] = -200.0
    data = replicas.bold_data(2, 3)
    got = fmri.project_volume(data, affine)
    expected = fmri.project_volume(data, affine, method="nilearn")
    assert np.isnan(got).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n,tr,expected", [(10, 1.49, 14), (592, 1.49, 882), (10, 2.0, 19), (238, 1.75, 416),
                                           (268, 1.75, 468), (4, 1.75, 6)])
def test_resampled_length_follows_neuralset(n, tr, expected):
    # neuralset 0.0.2: np.arange(0, (n - 1) * TR + TR - 1, step=1) -- the stop is excluded
    assert len(resample_times(n, tr)) == expected
    assert fmri.clean_and_resample(np.random.default_rng(0).normal(size=(n, 3)), tr).shape == (expected, 3)


def test_surface_truncation_keeps_first_fsaverage5_vertices():
    left = np.arange(40962 * 3, dtype=np.float32).reshape(40962, 3)
    right = -left
    out = fmri.truncate_surface(left, right)
    assert out.shape == (20484, 3)
    np.testing.assert_array_equal(out[:10242], left[:10242])
    np.testing.assert_array_equal(out[10242:], right[:10242])
    with pytest.raises(fmri.FmriFileError, match="2562 vertices per hemisphere"):
        fmri.truncate_surface(left[:2562], right[:2562], source="tiny.gii")


def test_gifti_one_array_per_volume(tmp_path):
    rng = np.random.default_rng(2)
    lh, rh = rng.normal(size=(163842, 3)), rng.normal(size=(163842, 3))
    lp = replicas.write_gifti(tmp_path / "sub-x_hemi-L_space-fsaverage_bold.func.gii", lh)
    rp = replicas.write_gifti(tmp_path / "sub-x_hemi-R_space-fsaverage_bold.func.gii", rh)
    out = fmri.load_surface_bold(lp, rp)
    np.testing.assert_allclose(out, np.vstack([lh[:10242], rh[:10242]]).astype(np.float32))
    assert fmri.n_volumes(lp) == 3


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(fmri.FmriFileError, match="nope.nii.gz: fMRI file not found"):
        fmri.load_volume(tmp_path / "nope.nii.gz")
    good = replicas.write_nifti(tmp_path / "bold.nii.gz", replicas.bold_data(5, 0))
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(fmri.FmriFileError, match="truncated.nii.gz"):
        fmri.load_volume(bad)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti at all")
    with pytest.raises(fmri.FmriFileError, match="junk.nii.gz: cannot read as NIfTI"):
        fmri.load_volume(junk)
    small_mask = replicas.write_nifti(tmp_path / "mask.nii.gz", np.ones((4, 4, 4), np.uint8))
    with pytest.raises(fmri.FmriFileError, match=r"mask.nii.gz: brain mask shape \(4, 4, 4\) does not match"):
        fmri.load_volume(good, small_mask)
    three_d = replicas.write_nifti(tmp_path / "three_d.nii.gz", np.ones(replicas.SHAPE, np.float32))
    with pytest.raises(fmri.FmriFileError, match="three_d.nii.gz: expected a 4-D BOLD"):
        fmri.load_volume(three_d)
    gii = tmp_path / "broken.func.gii"
    gii.write_text("<GIFTI>")
    with pytest.raises(fmri.FmriFileError, match="broken.func.gii: cannot read as GIFTI"):
        fmri.load_surface_bold(gii, gii)


def test_nibabel_reads_replica_volume_with_mni_affine(tmp_path):
    path = replicas.write_nifti(tmp_path / "b.nii.gz", replicas.bold_data(3, 0), tr=1.49)
    img = nibabel.load(str(path))
    assert img.shape == (12, 14, 12, 3)
    np.testing.assert_allclose(img.affine, replicas.AFFINE)
    assert img.header.get_zooms()[3] == pytest.approx(1.49)
