"""Time `nforge predict --media` on the test suite's tiny models (tests/conftest.py `tiny_models`): one
synthetic mp4 with a sound track and a TextGrid of its words, run twice into the same --out (the second run
reuses everything). Usage: `python tools/time_media.py [SECONDS]` from a source checkout (default 60 s)."""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_movie(path: Path, seconds: float, fps: int = 8, rate: int = 16000) -> Path:
    """Grey frames that brighten over time (48 x 40) and a 440 Hz tone."""
    import av

    with av.open(str(path), "w") as c:
        video = c.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt, video.bit_rate = 48, 40, "yuv420p", 2_000_000
        audio = c.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((40, 48, 3), (7 * i) % 256, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                c.mux(packet)
        for packet in video.encode():
            c.mux(packet)
        x = (0.4 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
        for k in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[None, k:k + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, k
            for packet in audio.encode(frame):
                c.mux(packet)
        for packet in audio.encode():
            c.mux(packet)
    return path


def main(seconds: float) -> None:
    import conftest
    from extract_helpers import WORDS
    from flax import nnx
    from test_media import CONFIG, recipe, write_textgrid

    from nforge_jax.cli import main as nforge
    from nforge_jax.model import FmriEncoder
    from nforge_jax.model.checkpoint import save_encoder

    root = Path(tempfile.mkdtemp(prefix="time_media_"))

    class Folders:  # what the fixture asks of pytest's tmp_path_factory
        def mktemp(self, name):
            (root / name).mkdir()
            return root / name

    models = conftest.tiny_models.__wrapped__(Folders())
    save_encoder(FmriEncoder(CONFIG, rngs=nnx.Rngs(0)), root / "ckpt",
                 metadata={"extract_recipe": recipe(models).to_dict()})
    films = root / "films"
    films.mkdir()
    write_movie(films / "movie.mp4", seconds)
    words = [(0.4 * i, 0.4 * i + 0.3, WORDS[i % len(WORDS)]) for i in range(int(seconds * 2.5) - 1)]
    write_textgrid(films / "movie.TextGrid", words)
    for run in ("first run", "second run"):
        t0 = time.time()
        code = nforge(["predict", "--media", str(films), "--checkpoint", str(root / "ckpt"), "--out",
                       str(root / "out"), "--no-progress"])
        print(f"{run}: exit {code}, {time.time() - t0:.1f} s wall", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
