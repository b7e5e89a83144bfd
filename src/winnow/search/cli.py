"""``winnow search``: build the first-stage index and evaluate retrieval on held-out queries."""

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
    from winnow.search.jobs import IndexJobConfig, build_index

    with user_errors():
        folder = build_index(config_from_flags(IndexJobConfig, config, overrides), quiet=quiet)
    typer.echo(f"index: {folder}")


@app.command("eval")
def evaluate(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = SET_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """nDCG, recall and MRR of BM25, dense and hybrid retrieval on one query split."""
    from winnow.search.jobs import SearchEvalConfig, run_search_eval

    run_config_job(
        SearchEvalConfig, config, overrides, lambda s: run_search_eval(s, root=out, quiet=quiet)
    )
