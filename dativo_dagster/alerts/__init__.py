"""Alerts: failed runs and failed ERROR checks, sent to the routes runner.yaml names per tenant."""

from dativo_dagster.alerts.sensors import CHECK_SENSOR_NAME, RUN_SENSOR_NAME, build_alert_sensors

__all__ = ["CHECK_SENSOR_NAME", "RUN_SENSOR_NAME", "build_alert_sensors"]
