# Pitstop's two images, from one Dockerfile:
#   --target detector  the node detector (pitstop-detector) only: the standard library, pydantic
#                      and PyYAML; no kopf, kubernetes client or apprise on every node.
#   --target brain     (the default, last stage) the brain (pitstop-brain), the CLI (pitstop) and
#                      the reboot Job's helper (pitstop-reboot), with nsenter for the Command method.
# Both run as 65532:65532 and need no writable root file system (bytecode is compiled at build).
#
# BASE must provide python3 (>= 3.11, with the venv module) and util-linux (nsenter, used by the
# reboot Job's Command method). The default is Debian bookworm's slim Python image; pin it by
# digest for a release (`podman image inspect --format '{{.Digest}}' <image>` shows it) and
# record the digest in docs/install.md. On machines without a registry for base images,
# `python -m localcluster.image` builds one from Debian's packages with debootstrap and passes
# --build-arg BASE=localhost/pitstop-base:bookworm.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# -- build: resolve the locked dependencies into virtual environments ----------------------------
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
# Dependencies first (their layer survives source changes), exactly as uv.lock pins them: every
# runtime dependency for the brain, the "detector" group only for the detector.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3 \
    && UV_PROJECT_ENVIRONMENT=/opt/detector /opt/uv/bin/uv sync --frozen --no-default-groups \
        --only-group detector --no-install-project --python python3
COPY brain ./brain
COPY detector ./detector
COPY pitstop ./pitstop
COPY pitstopctl ./pitstopctl
COPY reboot_helper ./reboot_helper
# The detector gets the project without its dependencies, then loses the brain's package and
# commands; the imports below fail the build if it needs anything it does not have.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3 \
    && /opt/pitstop/bin/python -c "import brain.main, pitstopctl.main, detector.main, reboot_helper.main" \
    && /opt/uv/bin/uv pip install --python /opt/detector/bin/python --no-deps . \
    && rm -r /opt/detector/lib/python3*/site-packages/brain \
        /opt/detector/lib/python3*/site-packages/pitstopctl \
        /opt/detector/lib/python3*/site-packages/reboot_helper \
        /opt/detector/bin/pitstop /opt/detector/bin/pitstop-brain /opt/detector/bin/pitstop-reboot \
    && /opt/detector/bin/python -c "import detector.main, detector.settings_model, yaml"

# -- runtime: what both images share: the interpreter and a non-root user ------------------------
FROM ${BASE} AS runtime
LABEL org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 pitstop \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pitstop
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /

# -- detector: on every node, so as small as the base allows ------------------------------------
FROM runtime AS detector
LABEL org.opencontainers.image.title="pitstop-detector" \
      org.opencontainers.image.description="Pitstop's node detector: labels its Node while a reboot is required"
COPY --from=build /opt/detector /opt/detector
ENV PATH=/opt/detector/bin:$PATH
USER 65532:65532
CMD ["pitstop-detector"]

# -- brain: the operator, the CLI and the reboot helper (last: the default target) ---------------
FROM runtime AS brain
LABEL org.opencontainers.image.title="pitstop" \
      org.opencontainers.image.description="Safe, coordinated node reboots for Kubernetes"
COPY --from=build /opt/pitstop /opt/pitstop
RUN command -v nsenter
ENV PATH=/opt/pitstop/bin:$PATH
USER 65532:65532
CMD ["pitstop-brain"]
