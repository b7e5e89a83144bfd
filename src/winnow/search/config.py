"""Typed configs of the search jobs: one ``SearchConfig`` holds every default of index, train and
eval, so ``configs/search/msmarco.yaml`` drives all of ``winnow search``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from winnow.common.config import Config
from winnow.search.embed import DEFAULT_CACHE_DIR

__all__ = [
    "ClicksConfig",
    "DatasetConfig",
    "EncoderConfig",
    "JudgeConfig",
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
    """Who grades the relevance teacher's training pairs: the qrels, or an LLM with a policy."""

    kind: Literal["qrels", "chat"] = "qrels"
    model: str | None = Field(None, description="chat model name (kind: chat)")
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
    clickbait_scale: float = Field(1.0, ge=0, description="simulated per-document noise")
    eta: float = Field(1.0, ge=0, description="position-bias exponent for IPS")


class TeacherConfig(Config):
    """Both teachers: full 6-layer cross-encoders from MiniLM with a fresh head."""

    max_length: int = Field(128, ge=8)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    temperature: float = Field(1 / 3, gt=0, description="target softmax temperature")
    loss: Literal["listwise", "mse"] = "listwise"
    trainable_layers: int | None = Field(
        1,
        ge=0,
        description="train only the top n layers, pooler and head; null = all (chosen on dev: "
        "fewer weights overfit 26 training queries less)",
    )


class StudentConfig(Config):
    """The student: a layer-pruned cross-encoder on short inputs, distilled from the teachers."""

    num_layers: int = Field(2, ge=1)
    max_length: int = Field(96, ge=8)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    temperature: float = Field(1.0, gt=0, description="softmax temperature on teacher logits")
    loss: Literal["listwise", "mse"] = "listwise"


class TrainConfig(Config):
    """``winnow search train``: two teachers, then one student per teacher-weight setting."""

    candidates: int = Field(30, ge=2, description="dense top-k reranked per query")
    judge: JudgeConfig = JudgeConfig()
    clicks: ClicksConfig = ClicksConfig()
    teacher: TeacherConfig = TeacherConfig()
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
    reuse_teachers: bool = Field(
        False,
        description="load both teachers from output_dir when saved there, train students only",
    )
    num_threads: int = Field(1, ge=1, description="torch CPU threads")

    @field_validator("students")
    @classmethod
    def _weights_known(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, weights in value.items():
            unknown = set(weights) - {"relevance", "engagement"}
            if unknown or not any(w > 0 for w in weights.values()):
                raise ValueError(
                    f"students.{name} must weight 'relevance' and/or 'engagement' (>= 0, one "
                    f"> 0); got {weights}"
                )
        return value


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
