import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

# Multi-device code is tested on 8 fake CPU devices; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the run (a new directory each run, inherited by the subprocesses the tests start):
# the many tiny trainings, CLI runs and notebooks compile the same few programs, and a hit runs the same program.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="nforge-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)  # the process that made it
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Never reach the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# tests/reference is importable as `reference`.
sys.path.insert(0, str(Path(__file__).parent))


# Tiny random Hugging Face models (saved with save_pretrained) and small media files, shared by the extraction
# and the media -> prediction tests.
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{"text": dir, "audio": dir, "video": dir} of tiny random models (hidden 32)."""
    import torch
    from extract_helpers import WORDS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, SeamlessM4TFeatureExtractor,
                              VJEPA2Config, VJEPA2Model, Wav2Vec2BertConfig, Wav2Vec2BertModel)

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    # text: byte-level BPE trained here + a 4-layer Llama
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20 + ["hello world, one two three."], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>")
    text_dir = root / "llama"
    fast.save_pretrained(text_dir)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256))
    llama.save_pretrained(text_dir)
    # audio: Wav2Vec-BERT, 3 layers
    audio_dir = root / "w2vbert"
    Wav2Vec2BertModel(Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                         intermediate_size=64, output_hidden_size=32, conv_depthwise_kernel_size=3,
                                         feature_projection_input_dim=160, add_adapter=False)).save_pretrained(audio_dir)
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
                                padding_value=1.0).save_pretrained(audio_dir)
    # video: V-JEPA 2, 3 layers, 4 frames per clip, 32 px crop
    video_dir = root / "vjepa2"
    VJEPA2Model(VJEPA2Config(crop_size=32, frames_per_clip=4, patch_size=8, tubelet_size=2, hidden_size=32,
                             num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2.0, pred_hidden_size=32,
                             pred_num_hidden_layers=1, pred_num_attention_heads=4,
                             pred_num_mask_tokens=2)).save_pretrained(video_dir)
    (video_dir / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "VJEPA2VideoProcessor", "crop_size": {"height": 32, "width": 32},
        "do_resize": True, "do_center_crop": True, "do_rescale": True, "do_normalize": True,
        "rescale_factor": 1 / 255, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "resample": 2, "size": {"shortest_edge": 36}}))
    return {"text": text_dir, "audio": audio_dir, "video": video_dir}


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    from extract_helpers import WORDS, write_mp4, write_wav

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    t = np.arange(int(5.3 * 22050)) / 22050
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * rng.standard_normal(t.size)], 1)
    text = root / "story.txt"
    text.write_text(" ".join(WORDS[:12]) + "\n")
    return {"wav": write_wav(root / "tone.wav", stereo, 22050), "wav_rate": 22050, "wav_s": 5.3,
            "mp4": write_mp4(root / "clip.mp4"), "mp4_s": 5.0, "txt": text}


# One headless Chromium for every browser test of the run (the viewer's pages: tests/viz/test_view*.py); each page
# opens in a context of its own, so the tests share no page state. Debian's chromium driven by playwright: no
# browser download.
CHROMIUM_FLAGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def find_chromium() -> str:
    import shutil

    for candidate in (os.environ.get("NFORGE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    pytest.fail("Chromium not found: the viewer's browser tests need it. Install it as root: "
                "apt-get update && apt-get install -y chromium (or set NFORGE_CHROMIUM to a Chromium binary)")


@pytest.fixture(scope="session")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install '.[dev]' (it drives the system Chromium)")
    executable = find_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
