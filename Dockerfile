# The dativo code-location image: a Dagster gRPC code server for k8s or ECS run launchers.
#   docker build -t dativo .
#   docker run -p 4000:4000 -e DATIVO_DAGSTER_PG_URL=... dativo
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATIVO_PROJECT_DIR=/opt/dativo \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /opt/dativo

# Dependencies first, so config-only changes rebuild in seconds.
COPY pyproject.toml README.md ./
COPY dativo_dagster ./dativo_dagster
RUN pip install ".[s3,glue]" \
    && useradd --create-home --uid 10001 dativo \
    && mkdir -p "$DAGSTER_HOME" /opt/dativo/.dativo \
    && chown -R dativo "$DAGSTER_HOME" /opt/dativo/.dativo

COPY --chown=dativo dagster.yaml "$DAGSTER_HOME/dagster.yaml"
COPY --chown=dativo runner.yaml workspace.yaml dagster.yaml ./
COPY --chown=dativo connectors ./connectors
COPY --chown=dativo tenants ./tenants

USER dativo
EXPOSE 4000
# Fail the build if the configuration is invalid (no secrets needed at load). The load also
# fills .dativo/cache, so the code server and every run worker start without parsing YAML.
RUN dativo validate --offline

CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "dativo_dagster.definitions", "--location-name", "dativo"]
