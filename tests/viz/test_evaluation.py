"""Figures of an evaluation: three cortical maps and the section bar chart, written atomically."""

import types

import numpy as np
import pytest

from nforge_jax.data import fsaverage as fs
from nforge_jax.viz.evaluation import plot_section_scores, save_evaluation_figures


def section_rows():
    return [{"roi": name, "kind": "section", "median_r": 0.1 * (i % 5), "median_r_ci_low": 0.1 * (i % 5) - 0.02,
             "median_r_ci_high": 0.1 * (i % 5) + 0.03, "median_r_over_ceiling": None if i == 3 else 0.5,
             "median_r_over_ceiling_ci_low": None, "median_r_over_ceiling_ci_high": None}
            for i, name in enumerate(fs.HCP_SECTIONS)]


def test_section_chart_draws_every_section_with_its_interval():
    import matplotlib.pyplot as plt

    fig = plot_section_scores(section_rows() + [{"roi": "L_V1", "kind": "area"}])
    try:
        ax = next(a for a in fig.axes if a.get_label() == "median_r")
        bars = ax.patches
        assert len(bars) == 22
        assert bars[2].get_width() == pytest.approx(0.2)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(fs.HCP_SECTIONS)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="no section rows"):
        plot_section_scores([{"roi": "L_V1", "kind": "area"}])


def test_save_evaluation_figures(tmp_path):
    v = fs.n_vertices()
    rng = np.random.default_rng(0)
    ceiling = rng.uniform(0.2, 0.9, v)
    r = ceiling * rng.uniform(0, 1, v)
    ev = types.SimpleNamespace(r=r, ceiling=ceiling, r_over_ceiling=r / ceiling, ceiling_method="given",
                               rois=section_rows())
    paths = save_evaluation_figures(ev, tmp_path)
    assert sorted(paths) == ["maps_ceiling", "maps_r", "maps_r_over_ceiling", "sections"]
    for path in paths.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    # no ceiling: the r map only; maps that are not on the mesh are left out
    no_ceiling = types.SimpleNamespace(r=r, ceiling=np.full(v, np.nan), r_over_ceiling=np.full(v, np.nan),
                                       ceiling_method="none", rois=[])
    assert sorted(save_evaluation_figures(no_ceiling, tmp_path / "b")) == ["maps_r"]
    small = types.SimpleNamespace(r=r[:30], ceiling=ceiling[:30], r_over_ceiling=r[:30], ceiling_method="x", rois=[])
    assert save_evaluation_figures(small, tmp_path / "c") == {}
