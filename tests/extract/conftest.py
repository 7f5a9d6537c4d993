"""Tiny random models of the released shapes, for the comparisons with TRIBE v2's own extractors."""

import pytest

from extract_helpers import WORDS
from reference_extractors import write_release_audio_model


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
    from transformers import LlamaConfig, LlamaModel

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
    audio_dir = write_release_audio_model(root / "w2vbert")
    out["audio"] = audio_dir
    return out
