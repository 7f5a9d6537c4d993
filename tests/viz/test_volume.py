"""Subcortical figures: values back in the MNI volume, slices / glass brain drawn where the voxels are, structure
bars, subcortical evaluation figures and activity movies."""

import types

import numpy as np
import pytest

from nforge_jax.data.regions import region_sets
from nforge_jax.data.spaces import subcortical_space
from nforge_jax.viz.surface import figure_to_array


@pytest.fixture(scope="module")
def grid():
    from nforge_jax.data.subcortical import load_grid

    return load_grid()


def coloured_pixels(fig) -> int:
    """Strongly coloured pixels left of the colour bar (the template is grey, the glass brain black lines)."""
    rgb = figure_to_array(fig).astype(np.int16)
    rgb = rgb[:, : int(rgb.shape[1] * 0.88)]
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())


def test_unmask_puts_each_value_at_its_voxel(grid):
    from nforge_jax.viz.volume import unmask

    values = np.arange(grid.n_voxels, dtype=np.float64) + 1.0
    values[5] = np.nan
    img = unmask(values, grid)
    data = np.asarray(img.dataobj)
    assert data.shape == (91, 109, 91) and np.allclose(img.affine, grid.affine)
    ijk = np.asarray(grid.ijk)
    assert data[tuple(ijk[7])] == 8.0 and data[tuple(ijk[5])] == 0.0
    assert np.count_nonzero(data) == grid.n_voxels - 1  # nothing outside the grid
    # the voxel sits at its MNI coordinate: the left thalamus is at negative x
    left = grid.structure_indices("left_thalamus")
    xyz = ijk[left] @ np.asarray(img.affine)[:3, :3].T + np.asarray(img.affine)[:3, 3]
    assert (xyz[:, 0] <= 0).all() and xyz[:, 0].mean() < -5
    with pytest.raises(ValueError, match=r"expected shape \(8803,\)|expected shape \("):
        unmask(np.zeros(10), grid)


@pytest.mark.parametrize("kind", ["slices", "glass"])
def test_maps_are_drawn_where_the_values_are(grid, kind):
    from nforge_jax.viz.volume import plot_subcortical

    nothing = np.full(grid.n_voxels, np.nan)
    thalamus = nothing.copy()
    thalamus[grid.structure_indices("thalamus")] = 1.0
    everywhere = np.ones(grid.n_voxels)
    counts = [coloured_pixels(plot_subcortical(v, grid, kind=kind, cmap="viridis", vmin=0, vmax=1, title=kind))
              for v in (nothing, thalamus, everywhere)]
    assert counts[0] < 50 < counts[1] < counts[2], counts
    with pytest.raises(ValueError, match="kind: expected one of"):
        plot_subcortical(everywhere, grid, kind="surface")


def test_structure_bars_with_intervals():
    import matplotlib.pyplot as plt

    from nforge_jax.viz.volume import plot_structure_values

    fig = plot_structure_values({"left_thalamus": 0.3, "right_thalamus": 0.5, "putamen": None},
                                ci={"left_thalamus": (0.2, 0.4), "right_thalamus": (0.45, 0.6),
                                    "putamen": (None, None)}, xlabel="median r")
    try:
        (ax,) = fig.axes
        assert [round(p.get_width(), 6) for p in ax.patches] == [0.3, 0.5, 0.0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["left thalamus", "right thalamus", "putamen"]
        assert ax.get_xlabel() == "median r"
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match=r"ci: no interval for \['b'\]"):
        plot_structure_values({"a": 1.0, "b": 2.0}, ci={"a": (0, 1)})
    with pytest.raises(ValueError, match="values: expected a mapping"):
        plot_structure_values([1.0, 2.0])


def test_subcortical_evaluation_figures(grid, tmp_path):
    from nforge_jax.viz.evaluation import save_evaluation_figures

    rng = np.random.default_rng(0)
    ceiling = rng.uniform(0.3, 0.9, grid.n_voxels)
    r = ceiling * rng.uniform(0, 1, grid.n_voxels)
    rows = [{"roi": name, "kind": kind, "median_r": 0.3, "median_r_ci_low": 0.25, "median_r_ci_high": 0.35,
             "median_r_over_ceiling": 0.5, "median_r_over_ceiling_ci_low": 0.4, "median_r_over_ceiling_ci_high": 0.6}
            for name, kind, _ in region_sets(subcortical_space(grid), grid=grid)]
    ev = types.SimpleNamespace(r=r, ceiling=ceiling, r_over_ceiling=r / ceiling, ceiling_method="given",
                               rois=rows, space=subcortical_space(grid).to_dict())
    paths = save_evaluation_figures(ev, tmp_path, grid=grid)
    assert sorted(paths) == ["maps_ceiling", "maps_r", "maps_r_over_ceiling", "structures"]
    for path in paths.values():
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_subcortical_activity_movie(grid, tmp_path):
    from PIL import Image

    from nforge_jax.viz.movie import write_activity_movie

    preds = np.zeros((2, grid.n_voxels))
    preds[0, grid.structure_indices("left")] = 1.0
    preds[1, grid.structure_indices("right")] = -1.0
    path = write_activity_movie(preds, tmp_path / "sub.gif", fps=2, grid=grid, volume_kind="glass")
    with Image.open(path) as im:
        assert im.n_frames == 2
        frames = []
        for i in range(2):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB"), np.int16))
    assert np.abs(frames[0] - frames[1]).mean() > 0.1
    with pytest.raises(ValueError, match="for the subcortical grid"):
        write_activity_movie(np.zeros((2, 30)), tmp_path / "bad.gif", grid=grid)
