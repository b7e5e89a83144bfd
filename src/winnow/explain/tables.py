"""Tabular inputs of the explain jobs: one CSV or Parquet file, a target and feature columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from winnow.common.config import Config
from winnow.common.inputs import read_table
from winnow.explain.exceptions import ExplainInputError

__all__ = ["Table", "TableConfig", "load_table"]

RIDESOURCING_FEATURES = [
    "pop_density_km2",
    "job_density_km2",
    "transit_stop_density_km2",
    "share_young_20_34",
    "share_hh_zero_veh",
    "share_ba_plus",
    "hh_weighted_median_income_2019",
    "downtown_zone_share",
]


class TableConfig(Config):
    """Where the table is and which columns to use; the default is the shipped Chicago table."""

    path: str = Field(
        "ridesourcing/community_area_features.csv",
        description="a CSV/Parquet path, or '<data set>/<file>' under the data root",
    )
    target: str = "rideshare_pickups_per_1000"
    log_target: bool = Field(True, description="model log1p(target), for skewed counts")
    features: list[str] = Field(default_factory=lambda: list(RIDESOURCING_FEATURES), min_length=2)
    id_column: str | None = "community_area"


@dataclass(frozen=True)
class Table:
    """Model inputs: ``X: [n, p]`` float, ``y: [n]`` float, row ids and column names."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str

    def row(self, identifier) -> int:
        """Index of the row whose id is ``identifier``."""
        matches = np.flatnonzero(self.ids.astype(str) == str(identifier))
        if matches.size == 0:
            raise ExplainInputError(
                f"no row has id {identifier!r}; ids look like {list(self.ids[:5])}"
            )
        return int(matches[0])


def load_table(config: TableConfig) -> Table:
    """Read the file and check the columns; rows with a missing value are dropped."""
    wanted = [config.target, *config.features] + ([config.id_column] if config.id_column else [])
    frame = read_table(
        config.path, wanted, "data.path", fix="fix data.features / data.target / data.id_column"
    )
    frame = frame.dropna(subset=wanted)
    if frame.empty:
        raise ExplainInputError(
            f"every row of data.path {config.path} lacks a value in {wanted}; fill them or "
            "choose other columns"
        )
    y = frame[config.target].to_numpy(dtype=float)
    if config.log_target:
        y = np.log1p(y)
    ids = frame[config.id_column].to_numpy() if config.id_column else np.arange(len(frame))
    target_name = f"log1p({config.target})" if config.log_target else config.target
    return Table(
        X=frame[config.features].to_numpy(dtype=float),
        y=y,
        ids=ids,
        feature_names=tuple(config.features),
        target_name=target_name,
    )
