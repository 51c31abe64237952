# The meshtrace sidecar image: `meshtrace proxy` as the entrypoint, running as a non-root user.
#
#   docker build -t meshtrace-sidecar .
#   docker run --rm -p 15006:15006 -e MESHTRACE_PROXY_UPSTREAM=host.docker.internal:8080 meshtrace-sidecar
#
# Every setting is a MESHTRACE_PROXY_* variable (the same as a `meshtrace proxy --flag`; flags given after the
# image name override them), and tracing uses the library's OTEL_*/MESHTRACE_* variables. The defaults below fit
# a Kubernetes pod (deploy/kubernetes/): the sidecar shares the pod's network namespace with the app.
# Not built on the project's machines (they have no container engine); see docs/deployment.md.

FROM python:3.11-slim AS build
# A C compiler for the build only: setup.py compiles the sidecar's request path with mypyc. The final stage gets
# the compiled wheel and no compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY meshtrace meshtrace
COPY integrations integrations
COPY proxy proxy
# Wheels for meshtrace and every dependency of meshtrace[proxy]; the final stage installs only those.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[proxy]'

FROM python:3.11-slim
LABEL org.opencontainers.image.title="meshtrace sidecar" \
      org.opencontainers.image.description="Tracing sidecar proxy: a span per hop, Istio metrics, Istio-style traffic rules" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'meshtrace[proxy]' \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 meshtrace \
    && useradd --system --uid 10001 --gid meshtrace --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshtrace \
    && mkdir -p /etc/meshtrace/rules \
    && chown -R meshtrace:meshtrace /etc/meshtrace

# Defaults (override any of them with -e / env:).
# Inbound listener for callers, on every interface; it forwards to the app on the pod's loopback.
ENV MESHTRACE_PROXY_LISTEN=0.0.0.0:15006 \
    MESHTRACE_PROXY_UPSTREAM=127.0.0.1:8080
# Outbound listener, the app's HTTP_PROXY: loopback only, nothing outside the pod can use it.
ENV MESHTRACE_PROXY_OUTBOUND=127.0.0.1:15001
# Admin (/ready /healthz /metrics /config_dump /stats) on every interface, for kubelet probes and Prometheus.
ENV MESHTRACE_PROXY_ADMIN=0.0.0.0:15000
# Needed for the two 0.0.0.0 addresses: the sidecar binds only loopback unless told otherwise.
ENV MESHTRACE_PROXY_ALLOW_PUBLIC_BIND=true
# Access log on stdout as JSON, for log collectors.
ENV MESHTRACE_PROXY_ACCESS_LOG=- \
    MESHTRACE_PROXY_ACCESS_LOG_FORMAT=json
# Spans go over OTLP/HTTP (Jaeger or a collector on 4318): point this at yours.
ENV OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
    PYTHONUNBUFFERED=1

# 15006 inbound, 15001 outbound (pod-local), 15000 admin: Istio's port numbers for the same roles
EXPOSE 15006 15001 15000

USER 10001:10001

# Ready only when the listeners are bound and the sidecar is not draining (/ready answers 503 then).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MESHTRACE_PROXY_ADMIN', '127.0.0.1:15000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2)"]

ENTRYPOINT ["meshtrace", "proxy"]
