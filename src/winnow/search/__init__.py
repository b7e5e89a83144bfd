"""search: semantic search with an LLM judge, teachers and a small ranker served prefill-only.

Modules, one concept each (import from them; nothing heavy loads until it is used). Sentence
embeddings and their on-disk cache live in :mod:`winnow.common.embeddings`, shared with route.

- ``datasets``: BEIR corpora, queries and graded qrels; query-level splits.
- ``retrieve``: dense (FAISS flat or HNSW), BM25 (bm25s), and hybrid fusion (RRF, interpolation).
- ``metrics``: nDCG@k, recall@k and friends over graded qrels, with ranx.
- ``teachers``: relevance judges: from qrels, an OpenAI-compatible chat LLM, a local causal LM.
- ``judge_check``: a model judge's agreement with the qrels, measured before it teaches.
- ``prefill_scoring``: prefill-only P(yes) scoring that reuses the query prefix's KV cache (the
  causal LM itself loads through :mod:`winnow.common.causal_lm`).
- ``llm_teacher``: an LLM relevance teacher: the yes/no answer margin, LoRA-tuned on graded lists.
- ``zero_shot``: a cross-encoder head that ranks untrained, from a bi-encoder checkpoint.
- ``clicks``: interaction logs (query, doc, impressions, clicks), IPS-debiased click rates.
- ``click_simulator``: a SIMULATED position-bias click model over real judgments.
- ``losses``: listwise and pointwise ranking losses with label masking.
- ``cross_encoder``: relevance and engagement teachers (cross-encoders from MiniLM).
- ``ranker``: the student: a layer-pruned, shorter-input cross-encoder distilled from several
  teachers with per-teacher masking.
- ``querygen``: pseudo-queries made from passages (extractive TF-IDF or an LLM).
- ``query_filters``: round-trip and no-leak filters and hard negatives; writes a query set.
- ``folds``: query folds for cross-validation, each with an inner split for choices.
- ``crossval``: cross-validated rerankers; each judged query scored by models blind to it.
- ``train_report``: the cross-validated table, intervals and plots of ``winnow search train``.
- ``summaries``: query-independent extractive summaries (compressed item text, made offline).
- ``rerank_stack``: the cross-encoder serving stack: dynamic int8, prefill-only batch scoring,
  throughput at a p99 latency budget.
- ``fitting``: what trained rankers share: parameter checks, torch threads, AdamW with warmup.
- ``reranking``: saved teachers and students found and loaded; reranking a first stage's top k.
- ``config``, ``jobs``, ``training``, ``cli``, ``demo``: ``winnow search
  index|train|eval|gen-queries`` and the demo step.
- ``server``: ``winnow search serve``, the fastapi app (``/search``, ``/v1/rerank``, ``/health``).
- ``server_service``: the search service: dense index and optional reranker, loaded once.
- ``server_requests``: the server's limits and the ``/v1/rerank`` request and response bodies.
- ``server_queue``: a bounded request queue with a deadline per request.
- ``server_loading``: what the server loads at start-up (index, passages, summaries), checked.
"""

__all__ = [
    "click_simulator",
    "clicks",
    "config",
    "cross_encoder",
    "crossval",
    "datasets",
    "fitting",
    "folds",
    "jobs",
    "judge_check",
    "llm_teacher",
    "losses",
    "metrics",
    "prefill_scoring",
    "query_filters",
    "querygen",
    "ranker",
    "rerank_stack",
    "reranking",
    "retrieve",
    "server",
    "server_loading",
    "server_queue",
    "server_requests",
    "server_service",
    "summaries",
    "teachers",
    "train_report",
    "training",
    "zero_shot",
]
