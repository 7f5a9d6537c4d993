"""The browser viewer's subcortical volume view: the page's embedded data against values worked out here from
the grid, the choice of space (argument, prediction marker, column count, --space), and the page in headless
Chromium (slices drawn in the data's colours at the right voxels, slider, hover, click, no network, no JS
errors)."""

import dataclasses
import hashlib
import json
import re
import warnings

import numpy as np
import pytest
from browser import opened_page
from test_view import embedded

from nforge_jax.data.spaces import SpaceMismatch, fsaverage5_space, subcortical_space
from nforge_jax.data.subcortical import STRUCTURES, load_grid
from nforge_jax.viz.view import view_predictions

SCALE = 3  # screen pixels per voxel in view.js


@pytest.fixture(scope="module")
def grid():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline rebuild says once per process that it is approximate
        return load_grid()


def side_signed(grid, t_frames=4) -> np.ndarray:
    """Frame 0: left structures positive (hot), right negative (cold), smooth in space; frame 1 the reverse;
    then smooth waves. A few NaN voxels in frame 2."""
    xyz = grid.coords_mm()
    sign = np.where(np.char.startswith(grid.voxel_structures, "left_"), 1.0, -1.0)
    frames = np.empty((t_frames, grid.n_voxels), np.float32)
    frames[0] = sign * (0.6 + 0.3 * np.sin(xyz[:, 1] / 9.0))
    frames[1] = -frames[0]
    for t in range(2, t_frames):
        frames[t] = np.sin(xyz[:, 0] / 12.0 + t) * np.cos(xyz[:, 2] / 15.0)
    frames[2, :7] = np.nan
    return frames


def test_volume_payload_is_the_grid_and_structure_means_are_exact(tmp_path, grid):
    frames = side_signed(grid)
    frames[0, :3] = [-1.0, 1.0, 0.0]
    data = embedded(view_predictions(frames, tmp_path / "v.html", vmin=-1.0, vmax=1.0, tr_s=2.0))
    assert data["space"] == "subcortical" and (data["n_frames"], data["n_points"]) == (4, grid.n_voxels)
    assert data["codes"][0, :3].tolist() == [0, 254, 127] and (data["codes"][2, :7] == 255).all()
    assert data["labels"][:2] == ["t = 0 s", "t = 2 s"]
    np.testing.assert_array_equal(data["voxel_ijk"].reshape(-1, 3), grid.ijk)
    assert data["shape"] == [91, 109, 91] and np.allclose(data["affine"], grid.affine)
    expected_names = [f"{side}_{s}" for side in ("left", "right") for s in STRUCTURES]
    assert data["region_names"] == expected_names
    names = np.array(expected_names)
    np.testing.assert_array_equal(names[data["region_of"]], grid.voxel_structures)
    for name in ("left_thalamus", "right_accumbens", "left_lateral_ventricle"):
        idx = np.flatnonzero(grid.voxel_structures == name)
        a = expected_names.index(name)
        np.testing.assert_allclose(data["region_means"][a], np.nanmean(frames[:, idx], axis=1), rtol=1e-5)
    # the anatomy: the template's brain behind the structures, black outside the head
    anatomy = data["anatomy"].reshape(91, 109, 91)
    assert anatomy[tuple(grid.ijk.T)].mean() > 60 and anatomy[0, 0, 0] == 0 and anatomy.max() <= 170
    # the first cursor: a voxel of a left structure
    assert grid.voxel_structures[_voxel_of(grid, data["cursor"])].startswith("left_")


def _voxel_of(grid, ijk) -> int:
    return int(np.flatnonzero((grid.ijk == np.asarray(ijk)).all(axis=1))[0])


def test_the_space_comes_from_the_argument_else_the_column_count(tmp_path, grid):
    sub = np.zeros(grid.n_voxels, np.float32)
    sub[0] = 1.0
    for space in (None, "subcortical", subcortical_space(grid)):
        assert embedded(view_predictions(sub, tmp_path / "v.html", space=space, grid=grid))["space"] == "subcortical"
    assert embedded(view_predictions(np.ones(20484), tmp_path / "c.html", vmin=0, vmax=2))["space"] == "fsaverage5"
    maps = embedded(view_predictions({"r": sub, "ceiling": sub + 0.5}, tmp_path / "m.html", grid=grid))
    assert maps["space"] == "subcortical" and maps["labels"] == ["r", "ceiling"] and maps["times"] is None
    with pytest.raises(ValueError, match=r"expected shape \(n_frames, 20484\) or \(20484,\) for fsaverage5"):
        view_predictions(sub, tmp_path / "x.html", space=fsaverage5_space())
    with pytest.raises(ValueError, match=rf"expected shape \(n_frames, {grid.n_voxels}\) .* for the subcortical grid"):
        view_predictions(np.zeros(20484), tmp_path / "x.html", space="subcortical")
    other = subcortical_space(grid)
    other = dataclasses.replace(other, grid={**other.grid, "voxels_sha256": "0" * 64})
    with pytest.raises(SpaceMismatch) as err:
        view_predictions(sub, tmp_path / "x.html", space=other)
    assert "the subcortical grid loaded here" in str(err.value) and "the values' space" in str(err.value)
    assert not (tmp_path / "x.html").exists()


def test_unknown_column_count_without_the_atlas_says_so(tmp_path, monkeypatch):
    import nforge_jax.data.subcortical as sc

    def missing():
        raise sc.SubcorticalAtlasNotFoundError("no atlas here")

    monkeypatch.setattr(sc, "load_grid", missing)
    with pytest.raises(ValueError, match="values: 100 columns are not 20484 .* not available .no atlas here"):
        view_predictions(np.zeros((2, 100)), tmp_path / "x.html")
    with pytest.raises(FileNotFoundError, match="no atlas here"):  # asked for by name: the atlas error itself
        view_predictions(np.zeros((2, 100)), tmp_path / "x.html", space="subcortical")


# ---------------------------------------------------------------------------------------------------------------
# nforge view


def predictions_dir(root, grid, space):
    """An `nforge predict` output directory of one subcortical timeline; the marker records ``space``
    (a dict, or None as in directories written before spaces were recorded)."""
    from nforge_jax.inference.batch import FORMAT_NAME, MARKER

    root.mkdir()
    values = side_signed(grid, 3)
    np.save(root / "run-1.npy", values)
    (root / "run-1.json").write_text(json.dumps({"name": "run-1", "file": "run-1.npy", "shape": list(values.shape),
                                                 "tr_s": 1.0, "start_s": 0.0,
                                                 "sha256": hashlib.sha256(values.tobytes()).hexdigest()}))
    marker = {"format": FORMAT_NAME, "version": 2, "n_outputs": grid.n_voxels, "tr_s": 1.0}
    if space is not None:
        marker["space"] = space
    (root / MARKER).write_text(json.dumps(marker))
    return root, values


@pytest.mark.parametrize("recorded", ["space", "old marker"])
def test_cli_reads_the_space_from_the_marker_else_the_column_count(tmp_path, grid, capsys, recorded):
    from nforge_jax.cli import main

    space = subcortical_space(grid).to_dict() if recorded == "space" else None
    source, values = predictions_dir(tmp_path / "preds", grid, space)
    assert main(["view", str(source), "--out", str(tmp_path / "a.html")]) == 0
    assert "3 frames" in capsys.readouterr().out
    data = embedded(tmp_path / "a.html")
    assert data["space"] == "subcortical" and data["title"] == "run-1 (preds)"
    a = data["region_names"].index("right_putamen")
    idx = grid.structure_indices("right_putamen")
    np.testing.assert_allclose(data["region_means"][a], values[:, idx].mean(axis=1), rtol=1e-5)


def test_cli_space_flag(tmp_path, grid, capsys, monkeypatch):
    from nforge_jax.cli import main

    monkeypatch.chdir(tmp_path)
    np.save("sub.npy", np.linspace(-1, 1, grid.n_voxels))
    assert main(["view", "sub.npy", "--out", "a.html"]) == 0 and embedded(tmp_path / "a.html")["space"] == "subcortical"
    assert main(["view", "sub.npy", "--out", "b.html", "--space", "subcortical"]) == 0
    capsys.readouterr()
    source, _ = predictions_dir(tmp_path / "preds", grid, subcortical_space(grid).to_dict())
    for argv, message in (
            (["sub.npy", "--space", "fsaverage5"], "sub.npy: values: expected shape (n_frames, 20484)"),
            ([str(source), "--space", "fsaverage5"], f"--space fsaverage5: {source} records its predictions as "
                                                     f"subcortical ({grid.n_voxels:,} voxels")):
        assert main(["view", *argv, "--out", "x.html"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and message in err[0], err
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser

T = 4


@pytest.fixture(scope="module")
def page(tmp_path_factory, grid, chromium):
    frames = side_signed(grid, T)
    path = view_predictions(frames, tmp_path_factory.mktemp("view") / "volume.html", title="volume test",
                            vmin=-1.0, vmax=1.0, grid=grid)
    data = embedded(path)
    with opened_page(chromium, path) as page:
        page.frames_data, page.data, page.grid = frames, data, grid
        yield page


def cursor(page) -> list[int]:
    return [int(x) for x in page.evaluate("document.body.dataset.cursor").split(",")]


def axial_pixels(grid, k, cur):
    """Grid voxels in axial slice k away from the cursor's lines, and their pixel centres in the canvas
    (left hemisphere on the left, anterior up)."""
    idx = np.flatnonzero((grid.ijk[:, 2] == k) & (grid.ijk[:, 0] != cur[0]) & (grid.ijk[:, 1] != cur[1]))
    i, j = grid.ijk[idx, 0], grid.ijk[idx, 1]
    return idx, (i * SCALE + 1), ((108 - j) * SCALE + 1)


def canvas_image(page, name) -> np.ndarray:
    from test_view import screenshot

    return screenshot(page, f"#slice-{name}")


def lut(page) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(page.data["lut"]), np.uint8).reshape(-1, 3).astype(int)


def check_axial_colours(page, frame):
    """Every voxel of the axial slice through the cursor is drawn in its code's colour at its place."""
    cur = cursor(page)
    idx, xs, ys = axial_pixels(page.grid, cur[2], cur)
    assert idx.size > 300
    image = canvas_image(page, "axial")
    drawn = image[ys, xs]
    codes = page.data["codes"][frame, idx]
    expected = np.where((codes == 255)[:, None], drawn, lut(page)[np.minimum(codes, 254)])
    assert np.abs(drawn - expected).max() <= 3, np.abs(drawn - expected).max()
    left = np.char.startswith(page.grid.voxel_structures[idx], "left_")
    return float((drawn[left, 0] - drawn[left, 2]).mean()), float((drawn[~left, 0] - drawn[~left, 2]).mean())


def test_the_slices_are_drawn_in_the_data_colours(page):
    left, right = check_axial_colours(page, 0)
    assert left > 60 and right < -60, (left, right)  # frame 0: left structures hot, right ones cold
    cur = cursor(page)
    z = page.grid.affine[2, 2] * cur[2] + page.grid.affine[2, 3]
    assert page.locator("#brain figcaption").first.text_content() == f"axial, z = {z:g} mm"
    image = canvas_image(page, "axial")
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # anatomy greys and data colours, not a flat fill
    for name in ("coronal", "sagittal"):
        assert (canvas_image(page, name).std(axis=(0, 1)) > 20).all()
    assert page.locator("#cb-min").text_content() == "-1.00" and page.locator("#frame-label").text_content() == "t = 0 s"


def test_the_slider_changes_the_colours(page):
    slider = page.locator("#slider")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 4, box["y"] + box["height"] / 2)
    page.keyboard.press("ArrowRight")  # a real input event on the slider
    page.wait_for_function("document.body.dataset.frame === '1'", timeout=30_000)
    left, right = check_axial_colours(page, 1)
    assert left < -60 and right > 60, (left, right)
    assert page.locator("#frame-label").text_content() == "t = 1 s"


def voxel_on_axial(page, structure) -> tuple[int, float, float]:
    """A voxel of ``structure`` in the axial slice through the cursor, and its page coordinates."""
    cur = cursor(page)
    idx, xs, ys = axial_pixels(page.grid, cur[2], cur)
    hits = np.flatnonzero(page.grid.voxel_structures[idx] == structure)
    assert hits.size, f"no {structure} voxel in axial slice {cur[2]}"
    h = hits[hits.size // 2]
    box = page.locator("#slice-axial").bounding_box()
    return int(idx[h]), box["x"] + xs[h] + 0.5, box["y"] + ys[h] + 0.5


def test_hover_names_the_structure_and_the_value(page):
    frame = int(page.evaluate("document.body.dataset.frame"))
    structure = next(s for s in ("left_putamen", "left_thalamus", "left_caudate")
                     if (page.grid.voxel_structures[page.grid.ijk[:, 2] == cursor(page)[2]] == s).any())
    voxel, x, y = voxel_on_axial(page, structure)
    page.mouse.move(x, y)
    tip = page.locator("#volume-tip")
    tip.wait_for(state="visible", timeout=10_000)
    text = tip.text_content()
    assert text.startswith(structure) and f"voxel {voxel} " in text, text
    mm = page.grid.coords_mm()[voxel]
    assert f"(x {mm[0]:g}, y {mm[1]:g}, z {mm[2]:g} mm)" in text, text
    value = float(re.search(r"mm\): [≈≤≥] (-?[\d.]+)", text).group(1))
    assert abs(value - page.frames_data[frame, voxel]) <= 1.0 / 254 + 1e-3, text
    assert structure in page.locator("#hover-info").text_content()
    page.mouse.move(1, 1)


def test_click_moves_the_cursor_and_draws_the_structure_time_course(page):
    cur = cursor(page)
    structure = next(s for s in ("right_putamen", "right_thalamus", "right_caudate")
                     if (page.grid.voxel_structures[page.grid.ijk[:, 2] == cur[2]] == s).any())
    voxel, x, y = voxel_on_axial(page, structure)
    page.mouse.click(x, y)
    page.wait_for_function(f"document.body.dataset.region === '{structure}'", timeout=30_000)
    ijk = page.grid.ijk[voxel].tolist()
    assert cursor(page) == ijk
    plotted = page.evaluate("document.getElementById('timecourse').data.map(d => [d.x, d.y])")
    expected = page.frames_data[:, page.grid.structure_indices(structure)].mean(axis=1)
    np.testing.assert_allclose(plotted[0][1], expected, rtol=1e-5)
    np.testing.assert_allclose(plotted[0][0], np.arange(T))
    assert f"{structure}: mean over its {page.grid.structure_indices(structure).size} voxels" in \
        page.locator("#timecourse").text_content()
    # the coronal and sagittal slices now pass through the clicked voxel: its colour is drawn there
    mm = page.grid.coords_mm()[voxel]
    captions = page.locator("#brain figcaption").all_text_contents()
    assert captions[1] == f"coronal, y = {mm[1]:g} mm" and captions[2] == f"sagittal, x = {mm[0]:g} mm"
    frame = int(page.evaluate("document.body.dataset.frame"))
    colour = lut(page)[page.data["codes"][frame, voxel]]
    coronal = canvas_image(page, "coronal")
    near = coronal[(90 - ijk[2]) * SCALE: (91 - ijk[2]) * SCALE, ijk[0] * SCALE: (ijk[0] + 1) * SCALE]
    assert (np.abs(near - colour).sum(axis=-1) <= 6).any()


def test_no_network_and_no_errors(page):
    assert page.requests == [page.url_expected], page.requests
    assert page.problems == []
