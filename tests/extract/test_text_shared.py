"""text.context_pass 'shared': one forward per block of a timeline's text, against the release rule.

The release rule (our per-word path, itself equal to neuralset 0.0.2 in test_reference_extractors.py) is
the reference: for the words whose release context is the whole preceding text the shared pass must give
the same vectors within 1e-5, tokenization at word boundaries included; later words must equal the
release rule applied to the shared pass's own, longer context.
"""

import dataclasses

import numpy as np
import pytest

from extract_helpers import WORDS
from nforge_jax.data.events import make_events
from nforge_jax.extract.text import TextConfig, TextExtractor
from nforge_jax.extract.text_shared import pass_plan, running_text
from nforge_jax.inference.stimulus import add_context
from reference_extractors import relative_error, segments_features, text_extractor

TOL = 1e-5
# Llama 3's pre-tokenizer pattern (tokenizer.json of Llama-3.2): a punctuation mark joins the letters after it
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
SENTENCES = ["The cat sat on a warm mat, while rain fell: 42 drops!", "Children ran home; they didn't eat (3.5 jars).",
             "Night came down", "quiet town and 1000000 breads", '"Yes!" said the cat.', "It's 12:30, isn't it?"]


@pytest.fixture(scope="module")
def llama3_split_model(tmp_path_factory):
    """A tiny Llama whose tokenizer pre-tokenizes as Llama 3's does (regex split, then bytes), pad = eos."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("llama3_split")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20 + SENTENCES * 10 + ["down.Children drops!Children"] * 30, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    fast.save_pretrained(root)
    torch.manual_seed(2)
    LlamaModel(LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=5,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)).save_pretrained(root)
    return root


def sentence_events(punctuated_words: bool, repeats: int = 2):
    """Words of SENTENCES with their sentences (joined without a space, as the release joins them); word texts
    with their punctuation ('drops!', as whisperX writes them) or without ('drops')."""
    rows, t = [], 0.0
    for sentence in SENTENCES * repeats:
        for w in sentence.split():
            text = w if punctuated_words else w.strip(',:;()!?."')
            rows.append({"type": "Word", "start": t, "duration": 0.4, "text": text or w, "sentence": sentence,
                         "timeline": "t"})
            t += 0.5
    return make_events(rows)


def pair_vectors(model_dir, events, context_pass, **kw):
    ex = TextExtractor(TextConfig(model_id=str(model_dir), layers=(0.5, 0.75, 1.0), aggregation="group_mean",
                                  cache_n_layers=20, batch_size=4, context_pass=context_pass, **kw), device="cpu")
    ex.load()
    pairs = ex._pairs(events[events["type"] == "Word"])
    vecs = ex.embed_shared(pairs) if context_pass == "shared" else ex.embed(pairs)
    return vecs, ex, pairs


@pytest.mark.parametrize("which", ["release", "llama3_split"])
@pytest.mark.parametrize("punctuated_words", [False, True])
def test_shared_pass_equals_release_rule(release_models, llama3_split_model, which, punctuated_words):
    model = release_models["text"] if which == "release" else llama3_split_model
    events = add_context(sentence_events(punctuated_words))
    ref, _, pairs = pair_vectors(model, events, "per_word")
    got, ex, _ = pair_vectors(model, events, "shared")
    assert relative_error(got, ref) <= TOL
    assert ex.n_model_tokens < 0.2 * sum(len(c) for _, c in pairs)  # one pass, not one per word
    if which == "llama3_split" and punctuated_words:
        # 'down' + 'quiet' (a sentence without a final mark) and '"Yes!"' + "It's": the pieces at the end of
        # these contexts are tokenized differently inside the longer text; those words got their own forward
        assert ex.n_own_forwards > 0


def test_later_words_use_the_pass_context(release_models):
    """Blocks of 6 words: words 0..6 see the whole text (as the release's 6-part contexts); a word of pass k >= 2
    equals the release rule on the context 'text from word (k - 1) * 6 on', not the release's 6 parts."""
    events = add_context(sentence_events(False), max_context_len=6)
    ref, _, pairs = pair_vectors(release_models["text"], events, "per_word")
    got, _, _ = pair_vectors(release_models["text"], events, "shared", context_words=6)
    assert relative_error(got[:7], ref[:7]) <= TOL
    assert relative_error(got[12:], ref[12:]) > 1e-3  # longer contexts: a measured deviation, not the rule
    text, ends = running_text(pairs)
    explicit = []
    for first, lo, hi in pass_plan(len(pairs), 6):
        s = ends[first - 1] if first else 0
        explicit += [(pairs[i][0], text[s: ends[i]]) for i in range(lo, hi)]
    ex = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(0.5, 0.75, 1.0),
                                  aggregation="group_mean", cache_n_layers=20, batch_size=1), device="cpu")
    assert relative_error(got, ex.embed(explicit)) <= TOL


def test_shared_pass_equals_neuralset(release_models, tmp_path):
    events = add_context(sentence_events(False))
    ref = segments_features(text_extractor(release_models["text"], tmp_path / "cache"), events)
    ex = TextExtractor(TextConfig(model_id=str(release_models["text"]), layers=(0.5, 0.75, 1.0), aggregation="group_mean",
                                  cache_n_layers=20, batch_size=4, context_pass="shared"), device="cpu")
    assert relative_error(ex.extract(events, ref.shape[0]), ref) <= TOL


def test_running_text_and_plan():
    pairs = [("a", "a"), ("b", "a b"), ("c", " b c"), ("d", " c d")]  # the first part dropped from word 2 on
    assert running_text(pairs) == ("a b c d", [1, 3, 5, 7])
    with pytest.raises(ValueError, match="word 2 \\('c'\\).*per_word"):
        running_text([("a", "a"), ("b", "a b"), ("c", "x c")])
    assert pass_plan(7, 3) == [(0, 0, 6), (3, 6, 7)]
    assert pass_plan(4, 3) == [(0, 0, 4)]


def test_config_rejects_a_bad_pass():
    with pytest.raises(ValueError, match="context_pass"):
        TextConfig(context_pass="blocks")
    with pytest.raises(ValueError, match="contextualized"):
        TextConfig(context_pass="shared", contextualized=False)
    assert dataclasses.replace(TextConfig(), context_pass="shared").context_pass == "shared"


@pytest.mark.parametrize("which", ["release", "llama3_split"])
def test_release_rule_reads_leading_words_from_one_pass(release_models, llama3_split_model, which):
    """The release rule's leading words (context = the whole text before them) come from one pass and equal
    the rule's own forward per word; from the first word whose context drops text on, a forward each."""
    model = release_models["text"] if which == "release" else llama3_split_model
    events = add_context(sentence_events(True), max_context_len=6)
    ref, ex, pairs = pair_vectors(model, events, "per_word")
    lead = ex.embed_leading(pairs)
    assert len(lead) == 7  # words 0..6: at most 6 parts before each, all of the text so far
    assert relative_error(lead, ref[:7]) <= TOL
    whole = add_context(sentence_events(True))  # contexts of up to 1024 parts: every word leads
    ref, ex, pairs = pair_vectors(model, whole, "per_word")
    tokens_before = ex.n_model_tokens
    lead = ex.embed_leading(pairs)
    assert len(lead) == len(pairs) and relative_error(lead, ref) <= TOL
    assert ex.n_model_tokens - tokens_before < 0.2 * sum(len(c) for _, c in pairs)


def test_leading_pass_stops_where_the_rule_differs(release_models):
    """A pad token of the tokenizer's own (a word's vector then depends on its batch): no leading pass. A pad
    (eos) token in a context (the rule counts it as a pad and cuts it) or a context over the tokenizer's
    length (the rule truncates it): the pass stops at the first such word."""
    events = add_context(sentence_events(False, repeats=1))
    _, ex, pairs = pair_vectors(release_models["text_pad"], events, "per_word")
    assert len(ex.embed_leading(pairs)) == 0
    ref, ex, pairs = pair_vectors(release_models["text"], events, "per_word")
    full = [ex.tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs]
    pad = full[6][-1]
    first_with_pad = next(j for j, ids in enumerate(full) if pad in ids)
    for pad_id, max_tokens, expected in ((pad, None, first_with_pad), (None, len(full[3]), 4)):
        out = np.zeros_like(ref)
        n = ex._shared_pass().embed_leading(pairs, out, pad_id, max_tokens)
        assert n == expected and relative_error(out[:n], ref[:n]) <= TOL
