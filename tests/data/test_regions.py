"""Regions of an output space: the cortex's HCP-MMP1 sets, the subcortical structures, per-region summaries."""

import numpy as np
import pytest

from nforge_jax.data import fsaverage as fs
from nforge_jax.data.regions import region_sets, region_summary
from nforge_jax.data.spaces import OutputSpace, SpaceMismatch, fsaverage5_space, subcortical_space
from nforge_jax.data.subcortical import STRUCTURES


@pytest.fixture(scope="module")
def grid():
    from nforge_jax.data.subcortical import load_grid

    return load_grid()


def test_subcortical_structures_per_side_and_both(grid):
    sets = region_sets(subcortical_space(grid), grid=grid)
    by_name = {name: (kind, idx) for name, kind, idx in sets}
    assert sets[0][0] == "all voxels" and len(sets[0][2]) == grid.n_voxels
    assert [n for n, k, _ in sets if k == "structure"] == list(STRUCTURES)
    assert len([n for n, k, _ in sets if k == "structure_side"]) == 2 * len(STRUCTURES)
    labels = grid.voxel_structures
    for s in STRUCTURES:
        left, right = by_name[f"left_{s}"][1], by_name[f"right_{s}"][1]
        assert (labels[left] == f"left_{s}").all() and (labels[right] == f"right_{s}").all()
        np.testing.assert_array_equal(np.sort(np.r_[left, right]), by_name[s][1])
    grey = by_name["grey matter"][1]
    assert len(grey) == grid.n_voxels - len(by_name["lateral_ventricle"][1])
    assert not np.isin(by_name["lateral_ventricle"][1], grey).any()
    assert [n for n, _, _ in region_sets(subcortical_space(grid), ["left_putamen", "amygdala"], grid=grid)] == [
        "all voxels", "left_putamen", "amygdala"]


def test_cortex_sets_and_other_spaces():
    sets = region_sets(fsaverage5_space())
    kinds = [k for _, k, _ in sets]
    assert kinds.count("section") == 22 and kinds.count("area") == 360 and kinds[:2] == ["all", "cortex"]
    np.testing.assert_array_equal(dict((n, i) for n, _, i in sets)["L_V1"], fs.hcp_roi_indices("L_V1"))
    assert [n for n, _, _ in region_sets(30)] == ["all vertices"]  # unspecified: every output only
    assert [n for n, _, _ in region_sets(fsaverage5_space(), None)] == ["all vertices"]


def test_bad_region_requests(grid):
    with pytest.raises(ValueError, match="rois: expected 'auto', 'structures'"):
        region_sets(subcortical_space(grid), "hcp", grid=grid)
    with pytest.raises(ValueError, match="unknown subcortical structure 'thalamos'.*closest: thalamus"):
        region_sets(subcortical_space(grid), ["thalamos"], grid=grid)
    with pytest.raises(ValueError, match="rois: expected 'auto', 'hcp'"):
        region_sets(fsaverage5_space(), "structures")
    with pytest.raises(ValueError, match="has no named regions"):
        region_sets(30, "hcp")
    other = OutputSpace("subcortical", grid.n_voxels, {**subcortical_space(grid).grid, "voxels_sha256": "0" * 64})
    with pytest.raises(SpaceMismatch, match="is not the grid of subcortical"):
        region_sets(other, grid=grid)


def test_region_summary_of_values_and_of_shares():
    regions = [("all", "all", np.arange(6)), ("a", "structure", np.array([0, 1, 2])),
               ("b", "structure", np.array([3, 4, 5])), ("none", "structure", np.array([], int))]
    r = np.array([0.1, 0.2, np.nan, 0.5, 0.7, 0.9])
    rows = region_summary(r, regions)
    assert [row["value"] for row in rows] == [pytest.approx(0.5), pytest.approx(0.15), pytest.approx(0.7), None]
    assert rows[1]["n"] == 3 and "dominant" not in rows[1]
    assert region_summary(r, regions, stat="mean")[2]["value"] == pytest.approx(0.7)
    shares = {"text": np.array([0.5, 0.6, 0.4, 0.0, 0.1, 0.0]), "audio": np.array([0.1, 0.0, 0.1, 0.6, 0.5, 0.7]),
              "total": np.ones(6), "baseline": np.zeros(6), "measure": "r2", "n_rows": 100}
    rows = region_summary(shares, regions)
    assert [row["dominant"] for row in rows] == ["audio", "text", "audio", None]  # all: medians 0.25 vs 0.3
    assert set(rows[1]) == {"region", "kind", "n", "text", "audio", "total", "baseline", "dominant"}
    with pytest.raises(ValueError, match=r"expected \(6,\) arrays"):
        region_summary(np.zeros(5), regions)
    with pytest.raises(ValueError, match="dominant: \\['video'\\]"):
        region_summary(shares, regions, dominant=["video"])
