"""Plan → the code location's two alert sensors (pure; nothing but Dagster imported at load).

* ``dativo_run_failure_alerts``: one alert per failed run of a tenant job (after its last retry).
* ``dativo_check_failure_alerts``: one alert per failed ERROR-severity check of this location's
  assets, per run.

Both are built only when runner.yaml configures alert routes, and then start RUNNING: an operator
who names routes expects alerts. Their cursors are Dagster sensor cursors, shown in the UI and
kept in the instance's storage across daemon restarts, so each failure is handled once, never once
per tick. What a tick does lives in :mod:`dativo_dagster.alerts.evaluate`, imported at the first
tick.

The run-failure sensor is a plain sensor over the instance's run-failure events rather than
Dagster's ``run_failure_sensor``: that one only sees runs launched through this code location
(their code-location origin), so the runs ``dativo run`` and ``dagster asset materialize`` execute
in-process would never alert; and it hands over up to five runs per tick with no way to stop
early, while this one stops starting runs before Dagster's tick timeout.
"""

# No `from __future__ import annotations`: Dagster inspects the tick functions' annotations.

from typing import TYPE_CHECKING

import dagster as dg

from dativo_dagster.config.plan import Plan
from dativo_dagster.translator import DativoTranslator

if TYPE_CHECKING:
    from dativo_dagster.alerts.evaluate import PlanIndex

RUN_SENSOR_NAME = "dativo_run_failure_alerts"
CHECK_SENSOR_NAME = "dativo_check_failure_alerts"
MINIMUM_INTERVAL_S = 30


def build_alert_sensors(plan: Plan, translator: DativoTranslator) -> list[dg.SensorDefinition]:
    """The alert sensors of ``plan``'s code location; none when no alert route is configured."""
    alerts = plan.runner.alerts
    if not alerts.enabled:
        return []
    built: list[PlanIndex] = []

    def index() -> "PlanIndex":
        # Built at the first tick, once per process: the code location loads without it.
        if not built:
            from dativo_dagster.alerts.evaluate import PlanIndex

            built.append(PlanIndex(plan, translator))
        return built[0]

    @dg.sensor(
        name=RUN_SENSOR_NAME,
        minimum_interval_seconds=MINIMUM_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends one alert per failed run of a tenant job (after its last retry) to the "
        "routes runner.yaml's alerts section names for its tenant. Cursor: the last run failure handled.",
    )
    def run_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        from dativo_dagster.alerts.evaluate import run_failure_tick

        return run_failure_tick(context, index(), alerts)

    @dg.sensor(
        name=CHECK_SENSOR_NAME,
        minimum_interval_seconds=MINIMUM_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends one alert per failed ERROR-severity check of a tenant's asset, per run, to "
        "the routes runner.yaml's alerts section names for its tenant. Cursor: the last run ends handled.",
    )
    def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        from dativo_dagster.alerts.evaluate import check_failure_tick

        return check_failure_tick(context, index(), alerts)

    return [run_failure_alerts, check_failure_alerts]
