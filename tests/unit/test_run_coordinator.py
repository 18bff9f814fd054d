"""Every run gets its tenant's tags, however it was launched (the run coordinator's pure part)."""

from __future__ import annotations

from dativo_dagster.run_coordinator import MULTIPLE, tenant_run_tags

SHOP = {"dativo/tenant": "acme", "dativo/job": "shop", "team": "data", "dagster/op_selection": "x"}
CRM = {"dativo/tenant": "acme", "dativo/job": "crm"}
OTHER = {"dativo/tenant": "globex", "dativo/job": "shop"}


def test_a_run_of_one_tenant_job_gets_its_tags_and_runner_yaml_tags() -> None:
    assert tenant_run_tags([SHOP, None, {}], {}) == {"dativo/tenant": "acme", "dativo/job": "shop", "team": "data"}


def test_tags_the_run_already_carries_are_kept() -> None:
    added = tenant_run_tags([SHOP], {"dativo/tenant": "acme", "team": "ops"})
    assert added == {"dativo/job": "shop"}
    assert tenant_run_tags([SHOP], {"dativo/tenant": "acme", "dativo/job": "shop", "team": "data"}) == {}


def test_a_tenant_or_job_tag_the_steps_contradict_is_overwritten() -> None:
    # A UI user materializes acme's assets tagged dativo/tenant=globex: the run stays acme's.
    added = tenant_run_tags([SHOP], {"dativo/tenant": "globex", "dativo/job": "billing", "team": "ops"})
    assert added == {"dativo/tenant": "acme", "dativo/job": "shop"}
    assert tenant_run_tags([SHOP, OTHER], {"dativo/tenant": "acme", "dativo/job": "shop"}) == {
        "dativo/tenant": MULTIPLE,
        "dativo/job": MULTIPLE,
    }
    assert tenant_run_tags([SHOP, CRM], {"dativo/tenant": "globex"}) == {
        "dativo/tenant": "acme",
        "dativo/job": MULTIPLE,
    }


def test_two_jobs_of_one_tenant_keep_the_tenant_limit() -> None:
    assert tenant_run_tags([SHOP, CRM], {}) == {"dativo/tenant": "acme", "dativo/job": MULTIPLE}


def test_several_tenants_queue_under_one_shared_value() -> None:
    assert tenant_run_tags([SHOP, OTHER], {}) == {"dativo/tenant": MULTIPLE, "dativo/job": MULTIPLE}


def test_runs_of_other_assets_are_left_alone() -> None:
    assert tenant_run_tags([{"owner": "x"}, None], {}) == {}
