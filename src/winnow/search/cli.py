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
) -> None:
    """Train the relevance and engagement teachers and distil the students from them."""
    from winnow.search.config import SearchConfig
    from winnow.search.training import run_search_train

    run_config_job(
        SearchConfig, config, overrides, lambda s: run_search_train(s, root=out, quiet=quiet)
    )


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


@app.command()
def serve(
    index_dir: Path = typer.Option(
        Path("runs/search-index"), "--index-dir", help="Folder written by `winnow search index`."
    ),
    reranker: Path | None = typer.Option(
        None, "--reranker", help="Saved student or teacher folder that reranks the dense hits."
    ),
    rerank_depth: int = typer.Option(30, "--rerank-depth", min=1, help="Dense hits reranked."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_k: int = typer.Option(100, "--max-k", min=1, help="Largest k a request may ask for."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads of torch and FAISS."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 reranker (CPU)."),
    summary_tokens: int | None = typer.Option(
        None,
        "--summary-tokens",
        min=8,
        help="Rerank on extractive summaries of at most this many word pieces (made once).",
    ),
) -> None:
    """Serve GET /search?q=...&k=... (retrieve, then rerank) and GET /health; Ctrl-C stops it."""
    from winnow.search.server import SearchService
    from winnow.search.server import serve as run_server

    with user_errors():
        service = SearchService.from_index(
            index_dir,
            reranker,
            rerank_depth=rerank_depth,
            int8=int8,
            summary_tokens=summary_tokens,
        )
        run_server(service, host=host, port=port, max_k=max_k, num_threads=threads)
