"""Relevance judges: qrels labels, a chat endpoint (mocked with httpx.MockTransport), a local LM."""

import json
import math

import httpx
import numpy as np
import pytest

from tests.search.conftest import tiny_causal_lm
from winnow.common.causal_lm import bundled_smollm2
from winnow.common.exceptions import MissingExtraError
from winnow.search.datasets import Passage, Query
from winnow.search.exceptions import JudgeEndpointError, JudgeReplyError, SearchInputError
from winnow.search.teachers import (
    CausalLMJudge,
    ChatJudge,
    QrelsJudge,
    RelevanceJudge,
    parse_grade,
)

QUERY = Query("q1", "where do cats sleep")
DOCS = [Passage("d1", "cats sleep on mats"), Passage("d2", "stock news"), Passage("d9", "x")]


def test_qrels_judge_zero_or_missing_for_unjudged():
    qrels = {"q1": {"d1": 3, "d2": 0}}
    np.testing.assert_array_equal(QrelsJudge(qrels).grade(QUERY, DOCS), [3.0, 0.0, 0.0])
    missing = QrelsJudge(qrels, unjudged="missing").grade(QUERY, DOCS)
    assert missing[:2].tolist() == [3.0, 0.0] and math.isnan(missing[2])
    with pytest.raises(SearchInputError, match="needs query ids"):
        QrelsJudge(qrels).grade("bare text", DOCS)
    assert isinstance(QrelsJudge(qrels), RelevanceJudge)


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("2", 2),
        ("  3\n", 3),
        ("Grade: 1", 1),
        ("**Score**: **0**", 0),
        ('{"grade": 3, "reason": "exact answer"}', 3),
        ("<think>could be 1 or 3</think>\nRelevance: 2", 2),
        ("I would rate it 2/3.", 2),
        ("The passage is highly relevant. Final grade: 2", 2),
        ("4", None),
        ("between 1 and 2", None),
        ("The passage is relevant.", None),
        ("", None),
    ],
)
def test_parse_grade(reply, grade):
    assert parse_grade(reply) == grade


def chat_reply(content, status=200, headers=None):
    body = {"choices": [{"message": {"role": "assistant", "content": content}}]}
    return httpx.Response(status, json=body, headers=headers)


class ScriptedEndpoint:
    """Answers requests in order from a script; records each request's JSON body."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.requests = []

    def __call__(self, request):
        self.requests.append(json.loads(request.content))
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def make_judge(endpoint, tmp_path, **kwargs):
    waits = []
    judge = ChatJudge(
        "judge-model",
        base_url="http://judge.test/v1",
        cache_dir=tmp_path,
        transport=httpx.MockTransport(endpoint),
        sleep=waits.append,
        backoff_s=0.5,
        **kwargs,
    )
    return judge, waits


def test_chat_judge_prompt_parse_and_cache(tmp_path):
    endpoint = ScriptedEndpoint(chat_reply("Grade: 3"), chat_reply("0"))
    judge, _ = make_judge(endpoint, tmp_path, policy="POLICY TEXT")
    grades = judge.grade(QUERY, DOCS[:2])
    assert grades.tolist() == [3.0, 0.0]
    sent = endpoint.requests[0]
    assert sent["model"] == "judge-model" and sent["temperature"] == 0.0
    prompt = sent["messages"][0]["content"]
    assert "POLICY TEXT" in prompt and QUERY.text in prompt and DOCS[0].text in prompt
    # Second call: all from the cache (the script is empty, so a request would fail).
    again, _ = make_judge(ScriptedEndpoint(), tmp_path, policy="POLICY TEXT")
    assert again.grade(QUERY, DOCS[:2]).tolist() == [3.0, 0.0]
    assert again.requests_sent == 0
    # A different policy is a different cache key.
    other, _ = make_judge(ScriptedEndpoint(chat_reply("1")), tmp_path, policy="OTHER")
    assert other.grade(QUERY, DOCS[:1]).tolist() == [1.0] and other.requests_sent == 1


def test_chat_judge_retries_429_5xx_and_timeouts_with_backoff(tmp_path):
    endpoint = ScriptedEndpoint(
        httpx.Response(429, text="slow down"),
        httpx.Response(503, text="overloaded", headers={"Retry-After": "7"}),
        httpx.ReadTimeout("timed out"),
        chat_reply("2"),
    )
    judge, waits = make_judge(endpoint, tmp_path, max_retries=4)
    assert judge.grade(QUERY, DOCS[:1]).tolist() == [2.0]
    assert waits == [0.5, 7.0, 2.0]  # backoff 0.5 * 2**attempt, Retry-After wins when given
    assert judge.requests_sent == 4


def test_chat_judge_gives_up_after_max_retries(tmp_path):
    endpoint = ScriptedEndpoint(*[httpx.Response(500, text="boom")] * 3)
    judge, waits = make_judge(endpoint, tmp_path, max_retries=2)
    with pytest.raises(JudgeEndpointError, match="failed 3 times; last: HTTP 500: boom"):
        judge.grade(QUERY, DOCS[:1])
    assert len(waits) == 2


def test_chat_judge_client_errors_fail_at_once(tmp_path):
    judge, waits = make_judge(ScriptedEndpoint(httpx.Response(401, text="bad key")), tmp_path)
    with pytest.raises(JudgeEndpointError, match=r"refused the request.*401"):
        judge.grade(QUERY, DOCS[:1])
    assert waits == []


def test_chat_judge_bad_reply_raises_or_is_missing(tmp_path):
    judge, _ = make_judge(ScriptedEndpoint(chat_reply("It depends.")), tmp_path)
    with pytest.raises(JudgeReplyError, match=r"without a 0-3 grade: 'It depends\."):
        judge.grade(QUERY, DOCS[:1])
    endpoint = ScriptedEndpoint(chat_reply("It depends."), chat_reply("1"))
    lenient, _ = make_judge(endpoint, tmp_path, on_bad_reply="missing")
    assert math.isnan(lenient.grade(QUERY, DOCS[:1])[0])
    # A bad reply is not cached: the next call asks again.
    assert lenient.grade(QUERY, DOCS[:1]).tolist() == [1.0]
    malformed, _ = make_judge(ScriptedEndpoint(httpx.Response(200, json={"x": 1})), tmp_path)
    with pytest.raises(JudgeReplyError, match="no choices"):
        malformed.grade("q", ["doc"])


def test_chat_judge_validates_at_construction():
    with pytest.raises(SearchInputError, match="placeholders"):
        ChatJudge("m", template="{query} {passage}")
    with pytest.raises(SearchInputError, match="on_bad_reply"):
        ChatJudge("m", on_bad_reply="ignore")


def test_causal_lm_judge_scores_probabilities_with_and_without_prefix_reuse(tiny_lm, tokenizer):
    template = "{policy}\nquery: {query}\npassage:\n{passage}\nrelevant? answer:"
    policy = "answer y if the passage answers the query, else n."
    kwargs = {"policy": policy, "template": template, "yes": "y", "no": "n", "batch_size": 2}
    judge = CausalLMJudge(tiny_lm, tokenizer, **kwargs)
    plain = CausalLMJudge(tiny_lm, tokenizer, reuse_prefix=False, **kwargs)
    docs = [doc.text for doc in DOCS]
    probabilities = judge.grade(QUERY, docs)
    assert judge.scale == "probability" and isinstance(judge, RelevanceJudge)
    assert probabilities.shape == (3,) and ((probabilities > 0) & (probabilities < 1)).all()
    np.testing.assert_allclose(probabilities, plain.grade(QUERY.text, DOCS), atol=1e-5)


def test_causal_lm_judge_from_pretrained_folder(tmp_path, tokenizer):
    # llama: transformers 5 would swap a character tokenizer saved beside a qwen2 config for
    # the Qwen2 tokenizer class, which real Qwen2 checkpoints want but this fixture does not.
    model = tiny_causal_lm("llama", len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    kwargs = {"template": "{policy}\nq: {query}\n{passage}\nanswer:", "yes": "y", "no": "n"}
    loaded = CausalLMJudge.from_pretrained(tmp_path, **kwargs).grade("cats", ["cat mat", "dog"])
    in_memory = CausalLMJudge(model, tokenizer, **kwargs).grade("cats", ["cat mat", "dog"])
    np.testing.assert_allclose(loaded, in_memory, atol=1e-6)


@pytest.mark.slow
def test_causal_lm_judge_from_the_bundled_gguf():
    pytest.importorskip("gguf")
    try:
        folder, gguf_file = bundled_smollm2()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    judge = CausalLMJudge.from_pretrained(folder, gguf_file=gguf_file, batch_size=2)
    probabilities = judge.grade("capital of france", ["Paris is the capital of France.", "Cats."])
    assert probabilities.shape == (2,) and ((probabilities > 0) & (probabilities < 1)).all()
