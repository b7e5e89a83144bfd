"""Fixtures of the search tests: a tiny BEIR folder and a tiny randomly initialised causal LM."""

import json

import pytest

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 ?:.,\n"
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def char_tokenizer():
    """One token per character of ALPHABET after SPECIALS; encoding prepends <bos>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIALS, *ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )


def tiny_causal_lm(family: str, vocab_size: int, seed: int = 0):
    """A 2-layer float32 model of ``family`` with grouped-query attention and large init."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[family]
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        initializer_range=0.2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.float().eval()


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The character tokenizer with a plain chat template (``role:\\n content``)."""
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory, chat_tokenizer):
    """A saved tiny random Llama with the chat tokenizer: a model folder as a hub would give."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_causal_lm("llama", len(chat_tokenizer), seed=5).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def tiny_lm(request, tokenizer):
    return tiny_causal_lm(request.param, len(tokenizer))


@pytest.fixture
def beir_folder(tmp_path):
    """A 4-document, 3-query BEIR folder; q3 has no judgments; the qrels file has a header."""
    docs = [
        {"_id": "d1", "title": "Cats", "text": "the cat sat on the mat"},
        {"_id": "d2", "title": "", "text": "dogs chase cats in the park"},
        {"_id": "d3", "text": "stock markets fell sharply today"},
        {"_id": "d4", "title": "", "text": "a kitten is a young cat"},
    ]
    queries = [
        {"_id": "q1", "text": "where did the cat sit"},
        {"_id": "q2", "text": "stock market news"},
        {"_id": "q3", "text": "unjudged question"},
    ]
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t3\nq1\td4\t1\nq2\td3\t2\n"
    )
    return tmp_path
