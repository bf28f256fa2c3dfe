# syntax=docker/dockerfile:1
# Multi-stage: dependencies are installed from the hashed runtime lock file in a build stage, and only
# the virtualenv is copied into a slim runtime that runs as a non-root user with a read-only root FS.
# requirements-runtime.lock holds the tracker and operator extras alone (no test or lint tools), with
# the same pins and hashes as requirements.lock (`make lock` writes both).
# PYTHON_IMAGE: any Debian bookworm image with python3 (>= 3.11) and its venv module; `make images`
# passes a debootstrap-made one where no registry is reachable.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements-runtime.lock ./
# The same install steps as `make venv`: every dependency pinned by hash.
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY politetenant ./politetenant
RUN /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime-base
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 polite \
    && useradd --system --uid 10001 --gid polite --home-dir /nonexistent --shell /usr/sbin/nologin polite
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/polite
USER 10001:10001

FROM runtime-base AS tracker
# Data, keys and the spool live on mounted volumes; the settings come from the operator's ConfigMap.
ENV POLITE_HOST=0.0.0.0 POLITE_PORT=8080 POLITE_SETTINGS=/etc/polite/settings.yaml
# 8080: public routes and the API; 9090: /healthz, /readyz, /metrics when serve runs with --ops-port
# (POLITE_OPS_PORT), as the operator renders it.
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('POLITE_OPS_PORT') or os.environ.get('POLITE_PORT') or '8080'), timeout=2)"]
ENTRYPOINT ["polite-tracker"]
CMD ["serve"]

FROM runtime-base AS operator
# Same virtualenv and non-root user as the tracker (the runtime lock holds both extras). These defaults
# run one cluster-wide operator with kopf's liveness endpoint on 8080; metrics are on 9090. The Helm
# chart passes its own arguments and sets POLITE_OPERATOR_CONFIG to its mounted ConfigMap; without
# it the built-in defaults apply, so `docker run IMAGE render -f tenant.yaml` needs no file.
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["polite-operator"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
