"""Small media files written with PyAV / wave for the extraction tests."""

import wave

import numpy as np

WORDS = ("the cat sat on a warm mat while rain fell over quiet town and children ran home to eat bread "
         "with honey before night came down").split()


def write_wav(path, samples, rate):
    """samples (n,) or (n, channels) float in [-1, 1] -> 16-bit PCM wav."""
    x = np.asarray(samples, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_mp4(path, n_frames=40, fps=8, size=(40, 48), audio_rate=16000, audio_s=None):
    """An mp4 whose frame i is uniformly grey level 6 * i (mod 240; mpeg4), with a 440 Hz AAC sound track."""
    import av

    h, w = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.bit_rate = 4_000_000
        if audio_rate:
            st = c.add_stream("aac", rate=audio_rate)
            st.layout = "mono"
        for i in range(n_frames):
            img = np.full((h, w, 3), (6 * i) % 240, np.uint8)
            for pk in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
        if audio_rate:
            n = int((audio_s or n_frames / fps) * audio_rate)
            t = np.arange(n) / audio_rate
            x = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, n, 1024):
                fr = av.AudioFrame.from_ndarray(x[None, k:k + 1024], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = audio_rate, k
                for pk in st.encode(fr):
                    c.mux(pk)
            for pk in st.encode():
                c.mux(pk)
    return path


def make_tiny_whisper(directory):
    """A random-init Whisper (1 layer, d_model 16) with a byte-level tokenizer, the special and timestamp
    tokens and the generation config that word timestamps need, saved as a local model directory."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    tok = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")  # as the released tokenizers
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])  # Whisper's timestamp tokens, 0-30 s
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, d_model=16, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=64,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=32, is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        alignment_heads=[[0, 0], [0, 1]], begin_suppress_tokens=[], suppress_tokens=[], max_initial_timestamp_index=50)
    model.save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
