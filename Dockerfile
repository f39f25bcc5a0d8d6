# The qorch operator image.
#   docker build -t qorch-operator:0.1.0 .
# Stage 1 builds the qorch wheel and installs it, with its dependencies, into a virtual
# environment; dependencies come as binary wheels only (--only-binary), so no compiler is
# needed. Stage 2 is the slim Python image plus that environment: no pip, no build tools,
# no source tree. It runs as a numeric non-root user and writes nothing outside /tmp, so it
# runs with readOnlyRootFilesystem (the Deployment mounts an emptyDir there).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/qorch \
    && /opt/qorch/bin/pip install --no-cache-dir --only-binary=:all: /wheels/qorch-*.whl \
    && /opt/qorch/bin/pip uninstall --yes pip setuptools \
    && /opt/qorch/bin/qorch --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="qorch-operator" \
      org.opencontainers.image.description="qorch: a Kubernetes operator that schedules work for fleets of AI agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="qorch"
ENV PATH=/opt/qorch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/qorch /opt/qorch
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["qorch"]
CMD ["operator", "run"]
