"""The browser viewer (`nforge view` / viz.view_predictions): the page's embedded data decoded here and compared
with values worked out by hand, input validation, the CLI, and the page itself in a real headless Chromium
(drawn cortex, slider, hover, click, no network, no JS errors)."""

import base64
import gzip
import io
import hashlib
import json
import re

import numpy as np
import pytest

from browser import opened_page

from nforge_jax.data.fsaverage import get_hcp_labels, load_mesh, n_vertices, smooth_random_field
from nforge_jax.viz.view import view_predictions

V = n_vertices("fsaverage5")
HALF = V // 2


def embedded(path) -> dict:
    """The page's JSON block with every packed array unpacked (frame codes summed back over time)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="nforge-data">(.*?)</script>', text, re.S)
    assert match, "no data block in the page"
    data = json.loads(match.group(1))
    for key, value in list(data.items()):
        if isinstance(value, dict) and "gz" in value:
            raw = gzip.decompress(base64.b64decode(value["gz"]))
            data[key] = np.frombuffer(raw, np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])
    data["codes"] = np.cumsum(data["codes"], axis=0, dtype=np.uint8)  # wraps mod 256, as the page does
    return data


def medial_wall() -> np.ndarray:
    inside = np.zeros(V, bool)
    for idx in get_hcp_labels().values():
        inside[idx] = True
    return ~inside


def test_frames_are_coded_over_the_colour_range_and_nan_has_its_own_code(tmp_path):
    values = np.zeros((3, V), np.float32)
    values[0, :5] = [-1.0, 1.0, 0.0, -7.0, 7.0]  # ends, middle, clipped below and above
    values[1, :3] = [np.nan, 0.25, -0.6]
    values[2] = 1.0
    out = view_predictions(values, tmp_path / "v.html", vmin=-1.0, vmax=1.0, tr_s=1.5, start_s=3.0)
    data = embedded(out)
    codes = data["codes"]
    assert codes.shape == (3, V)
    # 255 levels over [-1, 1]: -1 -> 0, 0 -> 127, 1 -> 254; NaN -> 255
    assert codes[0, :5].tolist() == [0, 254, 127, 0, 254]
    assert codes[1, :3].tolist() == [255, 159, 51]  # 1.25 * 127 = 158.75, 0.4 * 127 = 50.8
    assert (codes[2] == 254).all()
    assert data["labels"] == ["t = 3 s", "t = 4.5 s", "t = 6 s"] and data["times"] == [3.0, 4.5, 6.0]
    assert (data["vmin"], data["vmax"]) == (-1.0, 1.0) and (data["n_frames"], data["n_points"]) == (3, V)


def test_area_time_courses_are_exact_means_and_the_mesh_is_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, V)).astype(np.float32)
    labels = get_hcp_labels()
    values[2, labels["L_V1"][:10]] = np.nan  # NaN vertices are left out of their area's mean
    out = view_predictions(values, tmp_path / "v.html")
    data = embedded(out)
    assert data["region_names"] == list(labels)
    for name in ("L_V1", "R_A1", "L_44"):
        a = data["region_names"].index(name)
        np.testing.assert_array_equal(np.flatnonzero(data["region_of"] == a), labels[name])
        np.testing.assert_allclose(data["region_means"][a], np.nanmean(values[:, labels[name]], axis=1), rtol=1e-5)
    v1 = labels["L_V1"]
    np.testing.assert_allclose(data["region_means"][data["region_names"].index("L_V1"), 2], values[2, v1[10:]].mean(),
                               rtol=1e-5)
    assert (data["region_of"][medial_wall()] == -1).all()
    coords = data["coords"].reshape(V, 3)
    assert coords[:HALF, 0].max() < coords[HALF:, 0].min()  # left hemisphere to the left, not overlapping
    mesh = load_mesh()
    np.testing.assert_array_equal(coords[:HALF, 1:], mesh.coords("inflated", "left")[:, 1:])
    assert data["faces"].reshape(-1, 3).max() == V - 1 and data["faces"].size == 3 * 2 * 20480


def test_named_maps_are_frames_labelled_by_name(tmp_path):
    maps = {"r": np.full(V, 0.3), "ceiling": np.full(V, 0.5), "r_over_ceiling": np.full(V, 0.6)}
    data = embedded(view_predictions(maps, tmp_path / "maps.html", vmin=0.0, vmax=1.0))
    assert data["labels"] == ["r", "ceiling", "r_over_ceiling"] and data["times"] is None
    assert data["codes"][:, 0].tolist() == [76, 127, 152]  # 0.3 * 254 = 76.2, 0.5 * 254, 0.6 * 254 = 152.4


def test_the_page_is_one_file_without_external_resources(tmp_path):
    out = view_predictions(np.ones(V), tmp_path / "v.html", title="</script><b>x</b>", vmin=0, vmax=2)
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", text, re.I)
    assert text.count("</script>") == 3  # plotly, data, viewer: the title did not close a script early
    assert "<title>&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;</title>" in text
    assert embedded(out)["title"] == "</script><b>x</b>"


@pytest.mark.parametrize("values, kwargs, message", [
    (np.zeros((2, 100)), {}, "values: 100 columns match no output space; expected 20484 (fsaverage5 vertices) or"),
    (np.zeros((2, 100)), {"space": "fsaverage5"}, "expected shape (n_frames, 20484)"),
    (np.zeros(V), {"space": "volume"}, "space: expected 'fsaverage5', 'subcortical' or an OutputSpace"),
    (np.zeros((0, V)), {}, "no frames"),
    (np.full((2, V), np.nan), {}, "every value is NaN"),
    (np.full(V, np.inf), {}, "+-inf"),
    (np.zeros(V), {"vmin": 1.0, "vmax": 1.0}, "vmin < vmax"),
    (np.zeros((2, V)), {"frame_labels": ["a"]}, "expected 2 labels"),
    (np.zeros(V), {"tr_s": 0}, "tr_s"),
    (np.zeros(V), {"start_s": float("nan")}, "start_s"),
    ({}, {}, "empty mapping"),
    ({"r": np.zeros(10)}, {}, "values: 10 columns match no output space"),
    ({"r": np.zeros(V), "c": np.zeros(10)}, {}, "values['c']: expected shape (20484,)"),
    (np.zeros(V), {"cmap": "no_such_map"}, "unknown colormap"),
])
def test_bad_inputs_are_refused_with_a_clear_error(tmp_path, values, kwargs, message):
    with pytest.raises(ValueError) as err:
        view_predictions(values, tmp_path / "v.html", **kwargs)
    assert message in str(err.value)
    assert not (tmp_path / "v.html").exists()


def test_out_path_must_be_an_html_file(tmp_path):
    with pytest.raises(ValueError, match="out_path: expected an .html file name"):
        view_predictions(np.ones(V), tmp_path / "v.png")


# ---------------------------------------------------------------------------------------------------------------
# nforge view


def predictions_dir(root, names):
    """An `nforge predict` output directory as inference.batch writes it: <name>.npy + <name>.json per timeline."""
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in names:
        values = rng.standard_normal((3, V)).astype(np.float32)
        np.save(root / f"{name}.npy", values)
        (root / f"{name}.json").write_text(json.dumps({"name": name, "file": f"{name}.npy", "shape": [3, V],
                                                       "tr_s": 1.0, "start_s": 10.0,
                                                       "sha256": hashlib.sha256(values.tobytes()).hexdigest()}))
    return root


def test_cli_writes_a_page_from_a_predictions_directory(tmp_path, capsys):
    from nforge_jax.cli import main

    source = predictions_dir(tmp_path / "preds", ["run-1", "run-2"])
    assert main(["view", str(source), "--out", str(tmp_path / "a.html")]) == 2
    err = capsys.readouterr().err
    assert "holds 2 timelines; choose one with --timeline: run-1, run-2" in err and len(err.splitlines()) == 2
    assert main(["view", str(source), "--out", str(tmp_path / "a.html"), "--timeline", "run-3"]) == 2
    assert "--timeline run-3: no finished predictions" in capsys.readouterr().err
    assert main(["view", str(source), "--out", str(tmp_path / "a.html"), "--timeline", "run-2"]) == 0
    printed = capsys.readouterr().out
    size_mb = (tmp_path / "a.html").stat().st_size / 1e6
    assert f"nforge view: wrote {tmp_path / 'a.html'} ({size_mb:.1f} MB, 3 frames)" in printed
    data = embedded(tmp_path / "a.html")
    assert data["labels"] == ["t = 10 s", "t = 11 s", "t = 12 s"] and data["title"] == "run-2 (preds)"
    expected = np.load(source / "run-2.npy")
    a = data["region_names"].index("L_V1")
    np.testing.assert_allclose(data["region_means"][a], expected[:, get_hcp_labels()["L_V1"]].mean(axis=1), rtol=1e-5)


def test_cli_reads_npy_and_npz_maps(tmp_path, capsys):
    from nforge_jax.cli import main

    np.save(tmp_path / "one.npy", np.linspace(-1, 1, V))
    assert main(["view", str(tmp_path / "one.npy"), "--out", str(tmp_path / "one.html"), "--title", "a map",
                 "--vmin", "-2", "--vmax", "2"]) == 0
    data = embedded(tmp_path / "one.html")
    assert data["title"] == "a map" and (data["vmin"], data["vmax"]) == (-2.0, 2.0) and data["n_frames"] == 1
    np.savez(tmp_path / "maps.npz", r=np.full(V, 0.1), ceiling=np.full(V, 0.4))
    assert main(["view", str(tmp_path / "maps.npz"), "--out", str(tmp_path / "maps.html")]) == 0
    assert embedded(tmp_path / "maps.html")["labels"] == ["r", "ceiling"]
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["missing.npy", "--out", "x.html"], "missing.npy: no such file or directory"),
    (["bad.npy", "--out", "x.html"], "bad.npy: values: 7 columns match no output space"),
    (["one.npy", "--out", "x.png"], "--out: expected an .html file name"),
    (["one.npy", "--out", "x.html", "--tr", "0"], "--tr: expected a positive number"),
    (["one.npy", "--out", "x.html", "--timeline", "a"], "--timeline a: only for an nforge predict output"),
    (["notes.txt", "--out", "x.html"], "expected an nforge predict output directory, a .npy"),
    ([".", "--out", "x.html"], "not an nforge predict output directory"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    from nforge_jax.cli import main

    monkeypatch.chdir(tmp_path)
    np.save("one.npy", np.zeros(V))
    np.save("bad.npy", np.zeros((2, 7)))
    (tmp_path / "notes.txt").write_text("x")
    assert main(["view", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("nforge view: error: ") and message in err[0], err
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser: Debian's chromium, driven by playwright (no browser download); one Chromium for the
# whole run (tests/conftest.py `chromium`), a fresh context for each page.

T = 4


def test_chromium_is_installed(chromium):
    assert chromium.is_connected() and chromium.version


def browser_frames():
    """Frame 0: left hemisphere positive (hot colours), right negative (cold); frame 1 the reverse; then two
    smooth random frames. Values vary smoothly so the cortex shows many colours."""
    field = smooth_random_field(np.random.default_rng(0), T, 8)
    sign = np.where(np.arange(V) < HALF, 1.0, -1.0)
    frames = np.empty((T, V), np.float32)
    frames[0] = sign * (0.65 + 0.3 * np.tanh(field[0]))
    frames[1] = -frames[0]
    frames[2:] = np.tanh(field[2:])
    frames[:, medial_wall()] = np.nan
    return frames


@pytest.fixture(scope="module")
def page(tmp_path_factory, chromium):
    """One page for the module (see `opened_page`)."""
    frames = browser_frames()
    path = view_predictions(frames, tmp_path_factory.mktemp("view") / "view.html", title="browser test",
                            vmin=-1.0, vmax=1.0)
    with opened_page(chromium, path) as page:
        page.frames_data = frames
        yield page


def screenshot(page, selector) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)


def cortex_pixels(image) -> np.ndarray:
    """Mask of drawn pixels: anything not the white page."""
    return (image < 245).any(axis=-1)


def warmth(image, half: str) -> float:
    """Mean red minus blue over the drawn pixels of the image's left or right half (hot > 0 > cold)."""
    w = image.shape[1] // 2
    part = image[:, :w] if half == "left" else image[:, w:]
    drawn = part[cortex_pixels(part)]
    return float((drawn[:, 0] - drawn[:, 2]).mean())


def test_the_cortex_is_drawn_with_the_data_colours(page):
    image = screenshot(page, "#brain")
    drawn = cortex_pixels(image)
    assert drawn.mean() > 0.15, f"only {drawn.mean():.1%} of the plot area is drawn"
    assert len(np.unique(image[drawn], axis=0)) > 500  # shaded and coloured, not a flat fill
    # frame 0: the left hemisphere (drawn on the left in the default top view) hot, the right one cold
    assert warmth(image, "left") > 60 and warmth(image, "right") < -60, (warmth(image, "left"), warmth(image, "right"))
    assert page.locator("#frame-label").text_content() == "t = 0 s"
    assert page.locator("#cb-min").text_content() == "-1.00" and page.locator("#cb-max").text_content() == "1.00"


def test_the_slider_changes_the_colours(page):
    before = screenshot(page, "#brain")
    slider = page.locator("#slider")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 4, box["y"] + box["height"] / 2)  # focus at the start: frame 0 stays
    page.keyboard.press("ArrowRight")  # the slider's own keyboard control: one frame on
    page.wait_for_function("document.body.dataset.frame === '1'", timeout=30_000)
    after = screenshot(page, "#brain")
    assert page.locator("#frame-label").text_content() == "t = 1 s"
    both = cortex_pixels(before) & cortex_pixels(after)
    changed = (np.abs(before - after).sum(axis=-1) > 60) & both
    assert changed.sum() > 0.5 * both.sum()
    assert warmth(after, "left") < -60 and warmth(after, "right") > 60  # frame 1 is frame 0 reversed


def on_hemisphere(page, side: str) -> tuple[float, float]:
    """Page coordinates of a drawn cortex pixel in the middle of the left or right hemisphere."""
    image = screenshot(page, "#brain")
    drawn = cortex_pixels(image)
    w = image.shape[1] // 2
    cols = np.arange(image.shape[1])
    mask = drawn & ((cols < w) if side == "left" else (cols >= w))[None, :]
    ys, xs = np.nonzero(mask)
    y, x = int(np.median(ys)), int(np.median(xs[ys == int(np.median(ys))]))
    box = page.locator("#brain").bounding_box()
    return box["x"] + x, box["y"] + y


def test_hover_names_the_area(page):
    names = set(get_hcp_labels())
    for side, prefix in (("left", "L_"), ("right", "R_")):
        page.mouse.move(*on_hemisphere(page, side))
        label = page.locator("#brain .hovertext")
        label.wait_for(timeout=30_000)
        text = label.text_content()
        area = re.match(r"[LR]_[^\s<]+?(?=vertex)", text)
        assert area and area.group(0) in names and area.group(0).startswith(prefix), text
        # the vertex under the cursor is on that hemisphere and its value is the data's, to a colour level
        vertex, value = re.search(r"vertex (\d+): [≈≤≥] (-?[\d.]+)", text).groups()
        frame = int(page.evaluate("document.body.dataset.frame"))
        assert (int(vertex) < HALF) == (side == "left"), text
        assert abs(float(value) - page.frames_data[frame, int(vertex)]) <= 1.0 / 254 + 1e-3, text
        assert area.group(0) in page.locator("#hover-info").text_content()
        page.mouse.move(1, 1)


def test_click_draws_the_area_time_course(page):
    frame = int(page.evaluate("document.body.dataset.frame"))
    empty = screenshot(page, "#timecourse")
    page.mouse.move(*on_hemisphere(page, "left"))
    page.mouse.down()  # plotly reports a click on the frame drawn while the button is down
    page.wait_for_timeout(800)
    page.mouse.up()
    page.wait_for_function("document.body.dataset.region !== undefined", timeout=30_000)
    area = page.evaluate("document.body.dataset.region")
    assert area.startswith("L_") and area in page.locator("#timecourse").text_content()
    plotted = page.evaluate("document.getElementById('timecourse').data.map(d => [d.x, d.y])")
    expected = np.nanmean(page.frames_data[:, get_hcp_labels()[area]], axis=1)
    np.testing.assert_allclose(plotted[0][1], expected, rtol=1e-5)
    np.testing.assert_allclose(plotted[0][0], np.arange(T))
    assert plotted[1][0] == [frame] and np.isclose(plotted[1][1][0], expected[frame], rtol=1e-5)  # the marker
    drawn = screenshot(page, "#timecourse")
    line = (np.abs(drawn - [31, 95, 168]).sum(axis=-1) < 60) & ~(np.abs(empty - [31, 95, 168]).sum(axis=-1) < 60)
    assert line.sum() > 300, "no time course line drawn"
    marker = np.abs(drawn - [214, 39, 40]).sum(axis=-1) < 60
    assert marker.sum() > 30, "no marker at the current frame"


def test_play_advances_and_pause_stops(page):
    start = int(page.evaluate("document.body.dataset.frame"))
    page.locator("#play").click()
    page.wait_for_function(f"document.body.dataset.frame !== '{start}'", timeout=30_000)
    page.locator("#play").click()
    assert "play" in page.locator("#play").text_content()
    stopped = page.evaluate("document.body.dataset.frame")
    page.wait_for_timeout(1500)
    assert page.evaluate("document.body.dataset.frame") in (stopped, str((int(stopped) + 1) % T))


def test_no_network_and_no_errors(page):
    assert page.requests == [page.url_expected], page.requests
    assert page.problems == []
