"""``winnow search``: build the first-stage index, evaluate retrieval, serve the search API."""

from __future__ import annotations

from pathlib import Path

import typer

from winnow.common.cli import (
    CONFIG_OPTION,
    OUT_OPTION,
    QUIET_OPTION,
    SET_OPTION,
    config_from_flags,
    config_or_resumed,
    run_config_job,
    user_errors,
)

app = typer.Typer(
    help="Semantic search: embedding retrieval, BM25 and hybrids, judges, rerankers.",
    no_args_is_help=True,
)


@app.command()
def index(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Embed the corpus (cached on disk) and write the FAISS index and doc ids to index_dir."""
    from winnow.search.config import SearchConfig
    from winnow.search.jobs import build_index

    with user_errors():
        folder = build_index(config_from_flags(SearchConfig, config, overrides), quiet=quiet)
    typer.echo(f"index: {folder}")


@app.command()
def train(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the rerankers already saved in train.output_dir."
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue a stopped search-train run in this folder: its config.yaml (--set still "
        "applies), its finished folds reused, into a new run folder.",
    ),
) -> None:
    """Train the relevance and engagement teachers and distil the students from them."""
    from winnow.search.config import SearchConfig
    from winnow.search.training import run_search_train

    with user_errors():
        settings = config_or_resumed(SearchConfig, config, overrides, resume, "train.resume_from")
        report = run_search_train(settings, out, quiet, overwrite)
    typer.echo(f"report: {report}")


@app.command("eval")
def evaluate(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """nDCG, recall and MRR of BM25, dense and hybrid retrieval on one query split."""
    from winnow.search.config import SearchConfig
    from winnow.search.jobs import run_search_eval

    run_config_job(
        SearchConfig, config, overrides, lambda s: run_search_eval(s, root=out, quiet=quiet)
    )


@app.command("gen-queries")
def gen_queries(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = typer.Option(
        Path("runs/generated_queries.jsonl"),
        "--out",
        help="JSONL of the kept queries; <stem>.summary.json goes beside it.",
    ),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Write pseudo-queries for the passages (train.generated), keep those that find their
    passage again and copy no judged query, and add BM25 and dense hard negatives."""
    from winnow.search.config import SearchConfig
    from winnow.search.query_filters import run_gen_queries

    with user_errors():
        summary = run_gen_queries(
            config_from_flags(SearchConfig, config, overrides), out, quiet=quiet
        ).summary
    typer.echo(
        f"{summary['method']}: {summary['passages']} passages, {summary['generated']} queries "
        f"generated, {summary['kept_round_trip']} pass the round trip, "
        f"{summary['near_duplicates']} near-duplicates of judged queries, {summary['kept']} kept"
    )
    typer.echo(f"queries: {out}")


@app.command()
def serve(
    index_dir: Path = typer.Option(
        Path("runs/search-index"), "--index-dir", help="Folder written by `winnow search index`."
    ),
    reranker: Path | None = typer.Option(
        None, "--reranker", help="Saved student or teacher folder that reranks the dense hits."
    ),
    rerank_depth: int = typer.Option(30, "--rerank-depth", min=1, help="Dense hits reranked."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Anything but loopback needs an API key (--api-key-env)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key_env: str = typer.Option(
        "WINNOW_API_KEY",
        "--api-key-env",
        help="Environment variable holding the API key clients send as `Authorization: Bearer "
        "<key>`; unset or empty: no key (loopback only).",
    ),
    max_k: int = typer.Option(100, "--max-k", min=1, help="Largest k a request may ask for."),
    max_query_chars: int = typer.Option(512, "--max-query-chars", min=1),
    max_documents: int = typer.Option(
        1000, "--max-documents", min=1, help="Documents per /v1/rerank request."
    ),
    max_document_chars: int = typer.Option(
        500_000, "--max-document-chars", min=1, help="Characters of a rerank request's documents."
    ),
    max_queue: int = typer.Option(
        32, "--max-queue", min=1, help="Requests waiting or running; more get a 503."
    ),
    request_timeout: float = typer.Option(
        30.0, "--request-timeout", min=0.001, help="Seconds to wait and run; longer gets a 504."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads of torch and FAISS."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 reranker (CPU)."),
    summary_tokens: int | None = typer.Option(
        None,
        "--summary-tokens",
        min=8,
        help="Rerank on extractive summaries of at most this many word pieces (made once).",
    ),
) -> None:
    """Serve GET /search?q=...&k=..., POST /v1/rerank and GET /health; Ctrl-C stops it."""
    import os

    from winnow.search.exceptions import SearchInputError
    from winnow.search.server import is_loopback
    from winnow.search.server import serve as run_server
    from winnow.search.server_requests import ServerLimits
    from winnow.search.server_service import SearchService

    with user_errors():
        api_key = os.environ.get(api_key_env) or None
        if api_key is None and not is_loopback(host):
            raise SearchInputError(
                f"--host {host} accepts connections from other machines, but ${api_key_env} "
                f"is unset or empty; export {api_key_env}=<a long random secret> (clients send "
                "`Authorization: Bearer <secret>`), or serve on --host 127.0.0.1"
            )
        limits = ServerLimits(
            max_query_chars=max_query_chars,
            max_k=max_k,
            max_documents=max_documents,
            max_document_chars=max_document_chars,
            max_queue=max_queue,
            request_timeout_s=request_timeout,
        )
        service = SearchService.from_index(
            index_dir,
            reranker,
            rerank_depth=rerank_depth,
            int8=int8,
            summary_tokens=summary_tokens,
        )
        run_server(
            service, host=host, port=port, limits=limits, api_key=api_key, num_threads=threads
        )
