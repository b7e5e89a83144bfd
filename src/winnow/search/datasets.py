"""BEIR-format test collections: a corpus, queries, graded relevance judgments (qrels).

A BEIR folder holds::

    corpus.jsonl       {"_id": str, "title": str, "text": str[, "metadata": {...}]} per line
    queries.jsonl      {"_id": str, "text": str[, "metadata": {...}]} per line
    qrels/<split>.tsv  query-id <TAB> corpus-id <TAB> score, one judgment per line

The qrels file may start with a header line (BEIR writes ``query-id corpus-id score``) or not
(the shipped ``search/msmarco_trecdl19_subset`` has none): the first line is taken as a header
exactly when its score column is not an integer. Four-column TREC lines
(``qid Q0 docid grade``) are accepted too. Grades are kept as given (TREC DL: 0-3, where the
shipped subset dropped grade 0), so ``qrels[qid][docid] -> int``.

Queries without any judgment are kept (a search system still answers them) and listed in
:attr:`BeirDataset.unjudged_query_ids`; evaluation leaves them out.

>>> data = load_beir("search/msmarco_trecdl19_subset")  # doctest: +SKIP
>>> len(data.doc_ids), len(data.query_ids), len(data.judged_query_ids)  # doctest: +SKIP
(5000, 50, 43)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from winnow.common.data import dataset_path
from winnow.common.inputs import check_text_table
from winnow.search.exceptions import (
    DatasetFileNotFoundError,
    DatasetFormatError,
    SearchInputError,
)

__all__ = [
    "BeirDataset",
    "Passage",
    "Query",
    "QuerySplit",
    "jsonl_records",
    "load_beir",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "resolve_dataset",
    "split_queries",
]

logger = logging.getLogger(__name__)

BEIR_FIX = "a BEIR folder holds UTF-8 corpus.jsonl, queries.jsonl and qrels/<split>.tsv"

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Query:
    """One query: its id in the collection (``""`` when it has none) and its text."""

    id: str
    text: str


@dataclass(frozen=True)
class Passage:
    """One document: its id in the corpus (``""`` when it has none) and its text to rank."""

    id: str
    text: str


@dataclass(frozen=True, eq=False)
class BeirDataset:
    """One collection: ``n`` documents, ``m`` queries and graded judgments.

    Shape:
        ``doc_ids``, ``doc_titles``, ``doc_texts``: ``n`` strings each, in file order.
        ``query_ids``, ``query_texts``: ``m`` strings each, in file order.
        ``qrels``: ``{query id: {doc id: grade}}``, integer grades, only judged pairs.

    ``source`` is the folder read. ``unknown_docs`` counts judgments whose document is not in the
    corpus and ``unknown_queries`` those whose query is not in ``queries.jsonl``; both are kept in
    ``qrels`` and reported at load time.
    """

    doc_ids: list[str]
    doc_titles: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: Qrels
    source: str = ""
    unknown_docs: int = 0
    unknown_queries: int = 0
    _query_index: dict[str, int] = field(init=False, repr=False)
    _doc_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_query_index", {q: i for i, q in enumerate(self.query_ids)})
        object.__setattr__(self, "_doc_index", {d: i for i, d in enumerate(self.doc_ids)})

    @property
    def passages(self) -> list[str]:
        """Text to embed or index per document: ``"title text"``, or the text when untitled."""
        return [
            f"{title} {text}" if title else text
            for title, text in zip(self.doc_titles, self.doc_texts, strict=True)
        ]

    @property
    def judged_query_ids(self) -> list[str]:
        """Query ids with at least one judgment, in file order."""
        return [qid for qid in self.query_ids if self.qrels.get(qid)]

    @property
    def unjudged_query_ids(self) -> list[str]:
        """Query ids with no judgment at all, in file order."""
        return [qid for qid in self.query_ids if not self.qrels.get(qid)]

    def query_text(self, query_id: str) -> str:
        """Text of one query; :class:`SearchInputError` for an unknown id."""
        if query_id not in self._query_index:
            raise SearchInputError(f"query id {query_id!r} is not in {self.source or 'the data'}")
        return self.query_texts[self._query_index[query_id]]

    def queries(self) -> list[Query]:
        """Every query as a :class:`Query`, in file order."""
        return [
            Query(qid, text) for qid, text in zip(self.query_ids, self.query_texts, strict=True)
        ]

    def passages_of(self, doc_ids: Iterable[str]) -> list[Passage]:
        """Documents by id as :class:`Passage` objects (text as in :attr:`passages`)."""
        doc_ids, index = list(doc_ids), self._doc_index
        missing = [doc for doc in doc_ids if doc not in index]
        if missing:
            raise SearchInputError(f"document ids not in the corpus: {missing[:5]}")
        passages = self.passages
        return [Passage(doc, passages[index[doc]]) for doc in doc_ids]

    def with_queries(self, query_ids: Iterable[str]) -> BeirDataset:
        """The same corpus with only ``query_ids`` (in the order given) and their qrels."""
        wanted = list(query_ids)
        unknown = [qid for qid in wanted if qid not in self._query_index]
        if unknown:
            raise SearchInputError(f"query ids not in the data set: {unknown[:5]}")
        return BeirDataset(
            doc_ids=self.doc_ids,
            doc_titles=self.doc_titles,
            doc_texts=self.doc_texts,
            query_ids=wanted,
            query_texts=[self.query_text(qid) for qid in wanted],
            qrels={qid: dict(self.qrels[qid]) for qid in wanted if qid in self.qrels},
            source=self.source,
        )

    def summary(self) -> dict[str, int | str]:
        """Counts for a report: documents, queries, judged queries, judgments per grade."""
        grades: dict[str, int] = {}
        for judged in self.qrels.values():
            for grade in judged.values():
                grades[f"grade_{grade}"] = grades.get(f"grade_{grade}", 0) + 1
        return {
            "source": self.source,
            "documents": len(self.doc_ids),
            "queries": len(self.query_ids),
            "judged_queries": len(self.judged_query_ids),
            "judgments": sum(len(judged) for judged in self.qrels.values()),
            **dict(sorted(grades.items())),
            "unknown_docs": self.unknown_docs,
            "unknown_queries": self.unknown_queries,
        }


@dataclass(frozen=True)
class QuerySplit:
    """Disjoint query-id lists; every id of the input is in exactly one of them."""

    train: list[str]
    dev: list[str]
    test: list[str]


def resolve_dataset(source: str | Path) -> Path:
    """Folder of a BEIR collection given as a path, or as ``"<data set>/<sub folder>"``.

    A name is looked up under the data root (``$WINNOW_DATA`` or ``../shared/data``): its first
    component is the data set whose ``SHA256SUMS`` is verified, the rest a folder inside it.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or path.is_absolute() or str(source).startswith("."):
        found = "is a file" if path.exists() else "does not exist"
        raise DatasetFileNotFoundError(
            f"{source} {found}; pass a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a "
            "collection such as 'search/msmarco_trecdl19_subset'"
        )
    name, _, inner = str(source).partition("/")
    folder = dataset_path(name) / inner
    if not folder.is_dir():
        raise DatasetFileNotFoundError(
            f"{source!r} is neither a folder nor a collection under the data root ({folder}); "
            "fix: pass a BEIR folder or e.g. 'search/msmarco_trecdl19_subset'"
        )
    return folder


def load_beir(source: str | Path, split: str = "test") -> BeirDataset:
    """Read corpus, queries and ``qrels/<split>.tsv`` of a BEIR folder or named collection."""
    folder = resolve_dataset(source)
    doc_ids, titles, texts = read_corpus(_required(folder / "corpus.jsonl"))
    query_ids, query_texts = read_queries(_required(folder / "queries.jsonl"))
    qrels = read_qrels(_required(folder / "qrels" / f"{split}.tsv"))
    known_docs, known_queries = set(doc_ids), set(query_ids)
    unknown_docs = sum(doc not in known_docs for judged in qrels.values() for doc in judged)
    unknown_queries = sum(len(judged) for qid, judged in qrels.items() if qid not in known_queries)
    data = BeirDataset(
        doc_ids=doc_ids,
        doc_titles=titles,
        doc_texts=texts,
        query_ids=query_ids,
        query_texts=query_texts,
        qrels=qrels,
        source=str(folder),
        unknown_docs=unknown_docs,
        unknown_queries=unknown_queries,
    )
    logger.info(
        "loaded %s: %d documents, %d queries (%d without judgments: %s)",
        folder,
        len(doc_ids),
        len(query_ids),
        len(data.unjudged_query_ids),
        ", ".join(data.unjudged_query_ids) or "none",
    )
    if unknown_docs or unknown_queries:
        logger.warning(
            "%s: %d judgments name documents outside the corpus, %d name unknown queries",
            folder,
            unknown_docs,
            unknown_queries,
        )
    return data


def read_corpus(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """``(ids, titles, texts)`` of a ``corpus.jsonl``; a missing title is ``""``."""
    ids, titles, texts = [], [], []
    seen: set[str] = set()
    for line_no, record in jsonl_records(path):
        ids.append(_unique_id(record, seen, path, line_no))
        texts.append(_field(record, "text", path, line_no))
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise DatasetFormatError(path, line_no, f"'title' must be a string, got {title!r}")
        titles.append(title)
    return ids, titles, texts


def read_queries(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a ``queries.jsonl``."""
    ids, texts = [], []
    seen: set[str] = set()
    for line_no, record in jsonl_records(path):
        ids.append(_unique_id(record, seen, path, line_no))
        texts.append(_field(record, "text", path, line_no))
    return ids, texts


def read_qrels(path: str | Path) -> Qrels:
    """``{query id: {doc id: grade}}`` from a qrels TSV, with or without a header line.

    Lines have three tab- or space-separated columns (``qid docid grade``) or four (TREC:
    ``qid iteration docid grade``). The first non-empty line is a header when its grade column
    is not an integer; anywhere else that is a :class:`DatasetFormatError`, as is a pair judged
    twice with different grades.
    """
    qrels: Qrels = {}
    first = True
    with open(path, encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            columns = raw.split()
            if not columns:
                continue
            if len(columns) not in (3, 4):
                raise DatasetFormatError(
                    path,
                    line_no,
                    f"expected 3 columns (query-id, corpus-id, score) or 4 (TREC), "
                    f"got {len(columns)}: {raw.rstrip()!r}",
                )
            qid, doc, score = columns[0], columns[-2], columns[-1]
            grade = _as_int(score)
            if grade is None:
                if first:
                    first = False
                    continue
                raise DatasetFormatError(
                    path, line_no, f"score {score!r} is not an integer grade: {raw.rstrip()!r}"
                )
            first = False
            judged = qrels.setdefault(qid, {})
            if judged.get(doc, grade) != grade:
                raise DatasetFormatError(
                    path, line_no, f"pair ({qid}, {doc}) judged twice: {judged[doc]} and {grade}"
                )
            judged[doc] = grade
    return qrels


def split_queries(
    query_ids: Sequence[str],
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> QuerySplit:
    """Split query ids into train, dev and test, disjoint and deterministic.

    The distinct ids are sorted, shuffled by ``numpy.random.default_rng(seed)`` and cut at
    ``round(fraction * n)``, so the result depends only on the set of ids, the fractions and the
    seed (not on input order), and a query never appears in two parts.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise SearchInputError(
            f"fractions must be three non-negative numbers (train, dev, test) summing to 1; got "
            f"{fractions!r}; fix: e.g. (0.6, 0.2, 0.2)"
        )
    ids = sorted(set(query_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n_train = round(fractions[0] * len(ids))
    n_dev = min(round(fractions[1] * len(ids)), len(ids) - n_train)
    return QuerySplit(
        train=shuffled[:n_train],
        dev=shuffled[n_train : n_train + n_dev],
        test=shuffled[n_train + n_dev :],
    )


def _required(path: Path) -> Path:
    if not path.is_file():
        raise DatasetFileNotFoundError(
            f"{path} is missing; a BEIR folder holds corpus.jsonl, queries.jsonl and "
            "qrels/<split>.tsv"
        )
    check_text_table(path, "BEIR folder", "JSONL" if path.suffix == ".jsonl" else "TSV", BEIR_FIX)
    return path


def jsonl_records(path: str | Path) -> Iterable[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line; a bad line fails with file and line."""
    with open(path, encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(path, line_no, f"not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DatasetFormatError(path, line_no, "expected a JSON object per line")
            yield line_no, record


def _field(record: dict, name: str, path: str | Path, line_no: int) -> str:
    value = record.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DatasetFormatError(path, line_no, f"field {name!r} must be a string, got {value!r}")
    return value


def _unique_id(record: dict, seen: set[str], path: str | Path, line_no: int) -> str:
    item = _field(record, "_id", path, line_no)
    if item in seen:
        raise DatasetFormatError(path, line_no, f"duplicate _id {item!r}")
    seen.add(item)
    return item


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
