"""ROI figures (axes, lines, bars, heatmap against the input) and activity movies (decoded back frame by frame)."""

import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nforge_jax.data.fsaverage import get_hcp_labels, n_vertices  # noqa: E402
from nforge_jax.viz.movie import write_activity_movie  # noqa: E402
from nforge_jax.viz.roi import plot_roi_attention, plot_roi_values, resolve_rois  # noqa: E402

V = n_vertices("fsaverage5")


def axis(fig, label):
    found = [ax for ax in fig.axes if ax.get_label() == label]
    assert len(found) == 1, [ax.get_label() for ax in fig.axes]
    return found[0]


def test_roi_names_resolve_through_the_atlas():
    labels = get_hcp_labels()
    got = resolve_rois(["V1", "L_A1"])
    np.testing.assert_array_equal(got["V1"], np.union1d(labels["L_V1"], labels["R_V1"]))
    np.testing.assert_array_equal(got["L_A1"], labels["L_A1"])


def test_plot_roi_attention_axes_and_lines():
    t = np.arange(12)
    scores = {"V1": np.exp(-0.5 * (t - 2.0) ** 2), "A1": np.exp(-0.5 * (t - 9.0) ** 2), "L_44": np.ones(12) / 12}
    fig = plot_roi_attention(scores, views=["left", "right"], title="ROI attention")
    try:
        lines = axis(fig, "profiles").get_lines()
        assert [ln.get_label() for ln in lines] == ["V1", "A1", "L_44"]
        for ln, (name, p) in zip(lines, scores.items()):
            np.testing.assert_allclose(ln.get_xdata(), t * 0.5)  # 2 Hz input steps
            np.testing.assert_allclose(ln.get_ydata(), p)
        image = axis(fig, "heatmap").get_images()[0].get_array()
        assert image.shape == (3, 12)
        np.testing.assert_allclose(image[1], scores["A1"] / scores["A1"].max())
        assert [tk.get_text() for tk in axis(fig, "heatmap").get_yticklabels()] == ["V1", "A1", "L_44"]
        surfaces = [ax for ax in fig.axes if ax.get_label().startswith("surface")]
        assert [ax.get_label() for ax in surfaces] == ["surface left lateral", "surface right lateral"]
        assert all(ax.name == "3d" and ax.collections for ax in surfaces)
        cbar = axis(fig, "colorbar")
        assert cbar.get_ylim() == pytest.approx((0.0, 5.5))  # peak times span the 12 steps at 0.5 s
        assert fig._suptitle.get_text() == "ROI attention"
    finally:
        plt.close(fig)


def test_plot_roi_values_bars():
    values = {"V1": 0.8, "MT": 0.3, "A1": -0.1}
    fig = plot_roi_values(values, views=["left_medial"], sort=True, value_label="r")
    try:
        bars = axis(fig, "bars").patches
        np.testing.assert_allclose([b.get_height() for b in bars], [0.8, 0.3, -0.1])
        assert [tk.get_text() for tk in axis(fig, "bars").get_xticklabels()] == ["V1", "MT", "A1"]
        assert [ax.get_label() for ax in fig.axes if ax.get_label().startswith("surface")] == ["surface left medial"]
    finally:
        plt.close(fig)


def test_roi_errors_are_clear():
    with pytest.raises(ValueError, match=r"roi_scores: ROI 'V99' is not an HCP-MMP1 area"):
        plot_roi_attention({"V1": np.ones(4), "V99": np.ones(4)})
    with pytest.raises(ValueError, match=r"roi_scores\['A1'\]: 5 time steps, roi_scores\['V1'\] has 4"):
        plot_roi_attention({"V1": np.ones(4), "A1": np.ones(5)})
    with pytest.raises(ValueError, match=r"views: unknown view 'top'"):
        plot_roi_attention({"V1": np.ones(4)}, views=["top"])
    with pytest.raises(ValueError, match=r"values: ROI 'XYZ'"):
        plot_roi_values({"XYZ": 1.0})
    with pytest.raises(ValueError, match=r"values\['V1'\]: expected a number"):
        plot_roi_values({"V1": "high"})
    assert not plt.get_fignums()  # nothing half-built left open


def moving_blob(n_frames):
    """A distinct map per frame: a bump that walks over vertex index."""
    idx = np.arange(V)
    return np.stack([np.exp(-0.5 * ((idx - (i + 1) * V / (n_frames + 1)) / 800.0) ** 2) for i in range(n_frames)])


def test_gif_round_trip(tmp_path):
    from PIL import Image

    preds = moving_blob(3)
    path = write_activity_movie(preds, tmp_path / "sub" / "activity.gif", fps=4, title="pred")
    assert path == tmp_path / "sub" / "activity.gif"
    assert sorted(p.name for p in path.parent.iterdir()) == ["activity.gif"]  # no temp files left
    with Image.open(path) as im:
        assert im.n_frames == 3
        assert im.info["duration"] == 250
        frames = []
        for i in range(3):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB"), np.int16))
    assert frames[0].shape[0] > 100 and frames[0].shape[1] > 300
    assert np.abs(frames[0] - frames[1]).mean() > 0.1  # the frames show different maps


def test_mp4_round_trip(tmp_path):
    import av

    path = write_activity_movie(moving_blob(2), tmp_path / "activity.mp4", fps=2)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 2
    assert decoded[0].shape[2] == 3 and decoded[0].shape[0] > 100


def test_movie_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"path: expected a \.gif or \.mp4"):
        write_activity_movie(moving_blob(1), tmp_path / "a.avi")
    with pytest.raises(ValueError, match=r"preds: expected \(n_frames, 20484\)"):
        write_activity_movie(np.zeros((2, 100)), tmp_path / "a.gif")
    with pytest.raises(ValueError, match=r"fps"):
        write_activity_movie(moving_blob(1), tmp_path / "a.gif", fps=0)
    monkeypatch.setitem(sys.modules, "av", None)  # as if the optional package were not installed
    with pytest.raises(RuntimeError, match=r"needs the optional 'av' package"):
        write_activity_movie(moving_blob(1), tmp_path / "a.mp4")
    assert not list(tmp_path.iterdir())
