"""Video features against TRIBE v2's own extractor code: neuralset 0.0.2's ``HuggingFaceVideo`` (a test-only
reference; nforge_jax never imports it), configured as TRIBE v2's release: V-JEPA 2, layers [0.5, 0.75, 1.0]
with ``group_mean``, ``cache_n_layers=20``, token mean, ``clip_duration=4``, 2 Hz, 64 frames per clip.

The model is a random V-JEPA 2 with the release's depth (40 layers, 41 hidden states, so cache_n_layers
really subselects) and a tiny width; the video is a 25 fps mp4 of gradients and noise, 60 x 44 pixels, so
that the processor's resize (short edge 44 -> 36) and crop change values, and 25 fps makes moviepy's
end-of-file answer (the frame it read last) differ from the file's last frame. Each case runs neuralset's
extractor on a neuralset Video event and our VideoExtractor on the same span; max |ours - ref| / max |ref|
must be <= 1e-5.

What is compared with what: neuralset's whole path (moviepy reading, the end-of-file frame, optional
max_imsize through PIL, the model, token mean, layer subselection and grouping) with one part replaced:
transformers' ``VJEPA2VideoProcessor`` needs torchvision, and no torchvision wheel loads beside the CPU
torch this project pins, so ``AutoVideoProcessor`` is replaced by a stand-in that applies our
``VideoPreprocessor`` to each frame -- video is compared from the processor's output on. The processor's
one non-trivial step, the uint8 -> uint8 resize, is checked on its own in ``test_uint8_resize_*`` against an
independent numpy implementation of torch's fixed-point uint8 antialiased bilinear kernel (what torchvision
runs on x86 with AVX2 / AVX512 and on ARM; elsewhere it interpolates in float and rounds). With a
torchvision 0.28.0 wheel unpacked on PYTHONPATH (its two missing C++ ops registered as stubs) the real
processor gave the same features within 1.5e-7 (BUILD.md).
"""


import numpy as np
import pytest
import torch

from nforge_jax.data.events import make_events
from nforge_jax.extract.video import VideoConfig, VideoExtractor, resize_uint8
from reference_extractors import neuralset_video_features, write_release_video_model, write_textured_mp4

@pytest.fixture(scope="module")
def release_shape(tmp_path_factory):
    """A 40-layer V-JEPA 2 of width 16 (64 frames per clip, crop 32) and the textured mp4."""
    model_dir = write_release_video_model(tmp_path_factory.mktemp("vjepa2_l40"))
    mp4 = write_textured_mp4(tmp_path_factory.mktemp("media_textured") / "textured.mp4")
    return model_dir, mp4


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("span,max_imsize", [(None, None), ((1.3, 3.7), 40)], ids=["whole_file", "offset_imsize"])
def test_matches_neuralset_release_extractor(release_shape, span, max_imsize, monkeypatch, one_thread):
    model_dir, mp4 = release_shape
    ref, offset, duration = neuralset_video_features(model_dir, mp4, span, max_imsize)
    assert ref.shape == (2, 16, round(2 * duration))
    events = make_events([{"type": "Video", "start": 0.0, "duration": duration, "offset": offset,
                           "filepath": str(mp4), "timeline": "t"}])
    cfg = VideoConfig(model_id=str(model_dir), layers=(0.5, 0.75, 1.0), aggregation="group_mean",
                      cache_n_layers=20, token_aggregation="mean", clip_s=4.0, max_imsize=max_imsize)
    ours = VideoExtractor(cfg, device="cpu", dtype="float32").extract(events, n_steps=ref.shape[-1])
    ours = ours.transpose(1, 2, 0)  # (T, L, D) -> neuralset's (L, D, T)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, f"max relative error {err:.3g}"


def fixed_point_bilinear(img, h, w):
    """Independent numpy version of torch's uint8 antialiased bilinear kernel (align_corners=False): per
    axis (width first, then height, uint8 in between), triangle weights stretched by the scale when
    shrinking, normalised, quantised to int16 with the most precision bits (<= 22) that keep the largest
    weight * 2 below 2**15, accumulated with a half-unit rounding term and shifted back."""

    def one_axis(x, n_out, axis):
        n_in = x.shape[axis]
        scale = n_in / n_out
        support = scale if scale >= 1.0 else 1.0
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        rows = []
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            size = min(int(center + support + 0.5), n_in) - lo
            wt = np.array([max(0.0, 1.0 - abs((j + lo - center + 0.5) * inv)) for j in range(size)])
            rows.append((lo, wt / wt.sum()))
        wt_max = max(wt.max() for _, wt in rows)
        prec = 0
        while prec < 22 and int(0.5 + wt_max * (1 << (prec + 1))) < (1 << 15):
            prec += 1
        x = np.moveaxis(x.astype(np.int64), axis, -1)
        out = np.empty(x.shape[:-1] + (n_out,), np.int64)
        for i, (lo, wt) in enumerate(rows):
            q = np.floor(wt * (1 << prec) + 0.5).astype(np.int64)
            out[..., i] = (x[..., lo:lo + len(q)] @ q + (1 << (prec - 1))) >> prec
        return np.moveaxis(np.clip(out, 0, 255).astype(np.uint8), -1, axis)

    if w != img.shape[-1]:
        img = one_axis(img, w, img.ndim - 1)
    if h != img.shape[-2]:
        img = one_axis(img, h, img.ndim - 2)
    return img


SHAPES = [(44, 60, 36, 49), (40, 48, 36, 43), (20, 30, 36, 54), (270, 480, 292, 519), (97, 61, 57, 36)]


def test_uint8_resize_matches_the_fixed_point_kernel():
    import platform

    native = (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
              or platform.machine() in ("aarch64", "arm64"))
    rng = np.random.default_rng(0)
    off_by_one = []
    for H, W, h, w in SHAPES:
        x = rng.integers(0, 256, (2, 3, H, W), dtype=np.uint8)
        ours = resize_uint8(torch.from_numpy(x), (h, w)).numpy()
        # the float rule: interpolation in float32, then rounding (torchvision's path on other CPUs)
        floated = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(h, w), mode="bilinear",
                                                  align_corners=False, antialias=True).round().numpy()
        np.testing.assert_array_equal(ours, fixed_point_bilinear(x, h, w) if native else floated)
        off_by_one.append(np.mean(fixed_point_bilinear(x, h, w) != floated))
    assert min(off_by_one) > 0.05  # the two rules really differ: the choice matters
