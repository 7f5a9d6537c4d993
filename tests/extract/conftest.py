"""Tiny random Hugging Face models (saved with save_pretrained) and small media files made here."""

import json

import numpy as np
import pytest

from extract_helpers import WORDS, write_mp4, write_wav


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{"text": dir, "audio": dir, "video": dir} of tiny random models (hidden 32)."""
    import torch
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
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    t = np.arange(int(5.3 * 22050)) / 22050
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * rng.standard_normal(t.size)], 1)
    text = root / "story.txt"
    text.write_text(" ".join(WORDS[:12]) + "\n")
    return {"wav": write_wav(root / "tone.wav", stereo, 22050), "wav_rate": 22050, "wav_s": 5.3,
            "mp4": write_mp4(root / "clip.mp4"), "mp4_s": 5.0, "txt": text}


def _bpe_tokenizer(directory, pad: bool):
    """A byte-level BPE trained here, with Llama 3's special tokens (eos; a pad only when ``pad``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + (["<|pad|>"] if pad else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20 + ["Hello, world! 42 apples; 3.5 pears."] * 5, trainer)
    kw = {"pad_token": "<|pad|>"} if pad else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   model_max_length=131072, **kw)
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="session")
def release_models(tmp_path_factory):
    """Tiny random models of the released shapes (Llama with 28 layers, Wav2Vec-BERT with 24):
    {"text": dir (no pad token: pad = eos), "text_pad": dir (a pad token of its own), "audio": dir}."""
    import torch
    from transformers import LlamaConfig, LlamaModel, SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    root = tmp_path_factory.mktemp("release_models")
    torch.manual_seed(1)
    out = {}
    for name, pad in (("text", False), ("text_pad", True)):
        fast = _bpe_tokenizer(root / name, pad)
        LlamaModel(LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=28,
                               num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                               bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
                   ).save_pretrained(root / name)
        out[name] = root / name
    audio_dir = root / "w2vbert"
    Wav2Vec2BertModel(Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=24, num_attention_heads=2,
                                         intermediate_size=32, output_hidden_size=16, conv_depthwise_kernel_size=3,
                                         feature_projection_input_dim=160, add_adapter=False,
                                         # plain attention: 3x faster than relative_key on 60 s chunks, and
                                         # both sides run the same model either way
                                         position_embeddings_type=None)).save_pretrained(audio_dir)
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
                                padding_value=1.0).save_pretrained(audio_dir)
    out["audio"] = audio_dir
    return out
