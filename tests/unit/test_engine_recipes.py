"""Recipe rules of the external engines: what each engine needs, and what a native recipe refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dativo_dagster.config.models import Engine, SourceRecipe
from dativo_dagster.engines.base import EngineStateCodec
from dativo_dagster.engines.singer import SingerProtocol
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.registry import source_class


def _recipe(**fields: Any) -> SourceRecipe:
    return SourceRecipe.model_validate({"name": "r", **fields})


def test_an_engine_recipe_is_typed_by_its_engine_and_finds_its_source() -> None:
    singer = _recipe(engine="singer", pip_url="tap-mysql==1.17.7", config={"password": "${PW}"})
    assert singer.type == "singer" and singer.engine is Engine.SINGER
    assert singer.connection_defaults == {"password": "${PW}"}
    assert source_class(singer.type).__name__ == "SingerSource"
    meltano = _recipe(engine="meltano", meltano={"project": "meltano/shop", "extractor": "tap-mysql"})
    assert meltano.type == "meltano" and meltano.meltano is not None and meltano.meltano.pip_url.startswith("meltano==")
    assert source_class("meltano").__name__ == "MeltanoSource"
    native = _recipe(type="mysql", defaults={"port": 3306})
    assert native.connection_defaults == {"port": 3306}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"type": "mysql", "pip_url": "tap-mysql"}, "only for engine"),
        ({"type": "mysql", "config": {"host": "x"}}, "only for engine"),
        ({"engine": "singer"}, "needs 'pip_url'"),
        ({"engine": "singer", "type": "mysql", "pip_url": "tap-mysql"}, "has type 'singer'"),
        ({"engine": "singer", "pip_url": "tap-mysql", "defaults": {"host": "x"}}, "under 'config'"),
        ({"engine": "singer", "pip_url": "tap-mysql", "config": {"password": "${BROKEN"}}, "malformed"),
        ({"engine": "meltano"}, "needs 'meltano"),
        ({"engine": "meltano", "meltano": {"project": "../elsewhere", "extractor": "tap-x"}}, "inside the project"),
        (
            {"engine": "meltano", "meltano": {"project": "m", "extractor": "tap-x"}, "pip_url": "tap-x"},
            "installs its own",
        ),
        ({"engine": "airbyte", "pip_url": "x", "meltano": {"project": "m", "extractor": "tap-x"}}, "only for engine"),
        ({"engine": "singer", "pip_url": "tap-mysql", "executable": "../bin/sh"}, "executable"),
    ],
)
def test_broken_engine_recipes_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as error:
        _recipe(**fields)
    assert words in str(error.value)


def test_connector_states_order_by_their_bookmark_and_show_it() -> None:
    codec = EngineStateCodec(SingerProtocol)

    def state(value: Any) -> dict[str, Any]:
        return {"bookmarks": {"db-items": {"replication_key": "at", "replication_key_value": value}}}

    assert codec.is_before(state("2024-01-01T00:00:00Z"), state("2024-02-01T00:00:00Z"))
    assert not codec.is_before(state("2024-02-01T00:00:00Z"), state("2024-01-01T00:00:00Z"))
    assert not codec.is_before({"opaque": 1}, state(5))  # unknown positions: the connector is trusted
    assert codec.later(state(1), state(2)) == state(2) and codec.later(state(2), None) == state(2)
    assert codec.display(state(7), "id") == "id=7"
    assert codec.display({"opaque": [1, 2]}) == '{"opaque":[1,2]}'


def test_engine_objects_are_ordinary_assets_and_loading_runs_no_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dagster side does not know the engine: same keys, group and checks; nothing installed at load."""
    import dagster as dg

    from dativo_dagster.build import build_definitions
    from dativo_dagster.config.loader import load_plan
    from tests.integration.engine_harness import singer_project

    monkeypatch.setenv("DATIVO_CONNECTORS_DIR", str(tmp_path / "connectors"))
    objects = [
        {
            "name": "orders",
            "options": {"stream": "shop-orders"},
            "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            "primary_key": ["id"],
        },
        {"name": "customers", "options": {"stream": "shop-customers"}, "primary_key": ["id"]},
    ]
    root = singer_project(tmp_path / "p", "shop", objects)
    defs = build_definitions(load_plan(root, strict=True))
    graph = defs.resolve_asset_graph()
    keys = {key for key in graph.get_all_asset_keys()}
    assert keys == {dg.AssetKey(["acme", "mysql_singer", "orders"]), dg.AssetKey(["acme", "mysql_singer", "customers"])}
    assert {graph.get(key).group_name for key in keys} == {"acme"}
    assert graph.asset_check_keys  # the usual checks
    assert not (tmp_path / "connectors").exists()  # no virtualenv built, no connector started


def test_a_tenant_sets_only_what_the_recipe_allows_and_paths_stay_in_its_roots(tmp_path: Path) -> None:
    from dativo_dagster.config.loader import load_plan
    from tests.integration.engine_harness import singer_project

    objects = [{"name": "items", "options": {"stream": "items"}, "primary_key": ["id"]}]

    def problems(root: Path) -> str:
        plan = load_plan(root)
        return " ".join(problem for broken in plan.broken for problem in broken.problems)

    # A setting the recipe does not hand to tenants (where the server is, its certificates).
    root = singer_project(tmp_path / "a", "shop", objects, connection={"host": "db.other-tenant", "ssl_ca": "/x"})
    found = problems(root)
    assert "source.connection.host" in found and "source.connection.ssl_ca" in found

    # A path setting: inside the tenant's data roots, or refused (nested values and file:// URLs too).
    recipe = {"tenant_settings": ["database", "filter_dbs", "files"], "path_settings": ["files"]}
    outside = singer_project(
        tmp_path / "b", "shop", objects, recipe=recipe, connection={"files": [{"path": "file:///etc/passwd"}]}
    )
    assert "source.connection.files[0].path" in problems(outside)
    (tmp_path / "c/tenants/acme/data").mkdir(parents=True)
    inside = singer_project(
        tmp_path / "c", "shop", objects, recipe=recipe, connection={"files": [{"path": "tenants/acme/data/x.csv"}]}
    )
    assert problems(inside) == ""


def test_pip_sees_no_secret_and_takes_no_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from dativo_dagster.engines.venvs import _run, check_pip_url

    with pytest.raises(ValidationError, match="packages only"):
        _recipe(engine="singer", pip_url="--index-url https://evil.example/simple tap-mysql")
    with pytest.raises(ConfigError, match="packages only"):
        check_pip_url("-r /etc/requirements.txt", label="x")
    assert check_pip_url("tap-mysql==1.17.7 pymysql<2", label="x") == ["tap-mysql==1.17.7", "pymysql<2"]
    monkeypatch.setenv("ACME_STRIPE_KEY", "sk_live_other_tenant")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    probe = "import os, sys; sys.exit(3 if 'ACME_STRIPE_KEY' in os.environ or 'PIP_INDEX_URL' not in os.environ else 0)"
    _run([sys.executable, "-c", probe], label="probe", what="run", pip_url="probe")  # raises if the key leaked


def test_an_incremental_engine_object_that_would_append_is_refused(tmp_path: Path) -> None:
    from dativo_dagster.config.loader import ConfigProblems, load_plan
    from tests.integration.engine_harness import singer_project

    objects = [
        {
            "name": "items",
            "options": {"stream": "items"},
            "primary_key": ["id"],
            "incremental": {"strategy": "created", "cursor_field": "at"},
            "write_mode": "append",
        }
    ]
    # A connector re-sends the rows at its state's position: only a merge keeps them once.
    with pytest.raises(ConfigProblems, match="write_mode"):
        load_plan(singer_project(tmp_path / "p", "shop", objects), strict=True)
