# The dativo code-location image: a Dagster gRPC code server for k8s or ECS run launchers.
# Each container serves one of runner.yaml's code locations (`dativo workspace` lists them),
# chosen at run time by DATIVO_CODE_LOCATION, or baked in at build time by the build argument:
#   docker build -t dativo .
#   docker run -p 4000:4000 -e DATIVO_DAGSTER_PG_URL=... dativo                  # location "dativo"
#   docker run -p 4000:4000 -e DATIVO_CODE_LOCATION=eu -e DATIVO_DAGSTER_PG_URL=... dativo
#   docker build --build-arg DATIVO_CODE_LOCATION=dativo_2 -t dativo-2 .
# The instance file baked into $DAGSTER_HOME is the repository's dagster.yaml unless another file of
# the build context is named, such as a deployment's (ECS run launcher, S3 compute logs):
#   docker build --build-arg DAGSTER_INSTANCE_YAML=dagster-ecs.yaml -t dativo .
# docs/deploy.md is the deployment guide (ECS, Kubernetes, PostgreSQL, compute logs in S3).
# Run launchers (k8s, ECS) start run workers from the same image with their own command, which
# replaces CMD below; the worker loads the location its run belongs to.
FROM python:3.11-slim

ARG DATIVO_CODE_LOCATION=dativo
ARG DAGSTER_INSTANCE_YAML=dagster.yaml

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATIVO_PROJECT_DIR=/opt/dativo \
    DATIVO_CODE_LOCATION=${DATIVO_CODE_LOCATION} \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /opt/dativo

# Dependencies first, so config-only changes rebuild in seconds.
COPY pyproject.toml README.md ./
COPY dativo_dagster ./dativo_dagster
RUN pip install . \
    && useradd --create-home --uid 10001 dativo \
    && mkdir -p "$DAGSTER_HOME" /opt/dativo/.dativo \
    && chown -R dativo "$DAGSTER_HOME" /opt/dativo/.dativo

COPY --chown=dativo ${DAGSTER_INSTANCE_YAML} "$DAGSTER_HOME/dagster.yaml"
COPY --chown=dativo runner.yaml workspace.yaml dagster.yaml ./
COPY --chown=dativo connectors ./connectors
COPY --chown=dativo tenants ./tenants

USER dativo
EXPOSE 4000
# Fail the build if the configuration is invalid (no secrets needed at load), if workspace.yaml
# does not match runner.yaml's code locations, or if the classes a deployment's dagster.yaml names
# (dagster-aws: ECS run launcher, S3 compute logs; dagster-postgres) are missing. Loading every
# location's plan fills .dativo/cache, so the code server and every run worker start without
# parsing or validating YAML.
RUN python -c "from dagster_aws.ecs import EcsRunLauncher; from dagster_aws.s3.compute_log_manager import S3ComputeLogManager; import dagster_postgres" \
    && dativo validate --offline \
    && dativo workspace --check \
    && python -c "import dativo_dagster.locations as l; [l.location_plan(n) for n in l.location_names()]"

# A name runner.yaml does not define fails the load with CFG001 listing the names it does define.
CMD ["/bin/sh", "-c", "exec dagster code-server start --host 0.0.0.0 --port 4000 --module-name dativo_dagster.locations --attribute \"$DATIVO_CODE_LOCATION\" --location-name \"$DATIVO_CODE_LOCATION\""]
