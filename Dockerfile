# One small image for every Pitstop process: the brain (pitstop-brain), the node detector
# (pitstop-detector), the CLI (pitstop) and the reboot Job's helper (pitstop-reboot).
#
# BASE must provide python3 (>= 3.11, with the venv module) and util-linux (nsenter, used by the
# reboot Job's Command method). The default is Debian bookworm's slim Python image; pin it by
# digest for a release (`podman image inspect --format '{{.Digest}}' <image>` shows it) and
# record the digest in docs/install.md. On machines without a registry for base images,
# `python -m localcluster.image` builds one from Debian's packages with debootstrap and passes
# --build-arg BASE=localhost/pitstop-base:bookworm.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# -- build: resolve the locked dependencies into a virtual environment ---------------------------
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
# UV_SYSTEM_CERTS: trust the system CA bundle (a build may go through a TLS-inspecting proxy; the
# build command mounts the host's bundle over the base image's).
ENV UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/pitstop \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (their layer survives source changes), exactly as uv.lock pins them.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3
COPY brain ./brain
COPY detector ./detector
COPY pitstop ./pitstop
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3 \
    && /opt/pitstop/bin/python -c "import brain.main, detector.main, brain.reboot_helper"

# -- final: the interpreter, the virtual environment, a non-root user, nothing else --------------
FROM ${BASE}
LABEL org.opencontainers.image.title="pitstop" \
      org.opencontainers.image.description="Safe, coordinated node reboots for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/pitstop /opt/pitstop
RUN groupadd --system --gid 65532 pitstop \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pitstop \
    && command -v nsenter
ENV PATH=/opt/pitstop/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /
CMD ["pitstop-brain"]
