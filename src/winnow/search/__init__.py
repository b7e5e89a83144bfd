"""search: semantic search with an LLM judge, teachers and a small ranker served prefill-only.

Modules, one concept each (import from them; nothing heavy loads until it is used):

- ``datasets``: BEIR corpora, queries and graded qrels; query-level splits.
- ``embed``: sentence embeddings (bundled all-MiniLM-L6-v2) with an on-disk cache.
- ``retrieve``: dense (FAISS flat or HNSW), BM25 (bm25s), and hybrid fusion (RRF, interpolation).
- ``metrics``: nDCG@k, recall@k and friends over graded qrels, with ranx.
- ``teachers``: relevance judges: from qrels, an OpenAI-compatible chat LLM, a local causal LM.
- ``serving``: prefill-only P(yes) scoring that reuses the query prefix's KV cache.
- ``clicks``: interaction logs (query, doc, impressions, clicks), IPS-debiased click rates.
- ``click_simulator``: a SIMULATED position-bias click model over real judgments.
- ``losses``: listwise and pointwise ranking losses with label masking.
- ``cross_encoder``: relevance and engagement teachers (cross-encoders from MiniLM).
- ``ranker``: the student: a layer-pruned, shorter-input cross-encoder distilled from several
  teachers with per-teacher masking.
- ``summaries``: query-independent extractive summaries (compressed item text, made offline).
- ``stack``: the serving stack: dynamic int8, prefill-only batch scoring, throughput at a p99
  latency budget.
- ``reranking``: saved teachers and students found and loaded; reranking a first stage's top k.
- ``config``, ``jobs``, ``training``, ``cli``, ``demo``: ``winnow search index|train|eval`` and
  the demo step.
- ``server``: ``winnow search serve``, the fastapi app (``/search``, ``/health``).
"""

__all__ = [
    "click_simulator",
    "clicks",
    "config",
    "cross_encoder",
    "datasets",
    "embed",
    "jobs",
    "losses",
    "metrics",
    "ranker",
    "reranking",
    "retrieve",
    "server",
    "serving",
    "stack",
    "summaries",
    "teachers",
    "training",
]
