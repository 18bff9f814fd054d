"""Sources register themselves; the recipe type and the registry cannot disagree."""

from __future__ import annotations

import pytest

from dativo_dagster.errors import ConfigError
from dativo_dagster.sources import registry
from dativo_dagster.sources.base import Source
from dativo_dagster.sources.csv import CsvSource


def test_a_source_module_is_found_by_its_type_name() -> None:
    assert registry.source_class("csv") is CsvSource
    assert {"csv", "postgres", "mysql"} <= set(registry.available_types())


def test_an_unknown_type_is_cfg001_listing_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"source type 'excel' is not available in this build \(available: .*csv"):
        registry.source_class("excel")


def test_a_subclass_declaring_a_type_registers_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))

    class Plugin(CsvSource):
        type = "plugin_csv"

    assert registry.source_class("plugin_csv") is Plugin


def test_two_classes_cannot_claim_one_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))
    with pytest.raises(ValueError, match="registered twice"):

        class Impostor(CsvSource):
            type = "csv"


def test_an_intermediate_base_without_a_type_is_not_registered() -> None:
    assert all(cls is not Source for cls in registry._TYPES.values())
