# syntax=docker/dockerfile:1.7
# so101-bus: the whole runtime (hub, policy, fake environment or robot, control, dashboard) under
# supervisord, with the shipped checkpoints and datasets.
#
#   docker build -t so101-bus .
#   docker run --rm --gpus all -p 127.0.0.1:9000:9000 -e TASK=lift so101-bus
#
# Environment: TASK=lift|sort|stack, DEVICE=auto|cpu|cuda, SO101_PROFILE=fake|robot and the rest
# listed at the top of supervisord.conf. Without --gpus the policy says so and runs on the CPU.
#
# Base: CUDA "base" (the CUDA runtime library and the variables that make the NVIDIA container
# runtime mount the driver), not "runtime"/"cudnn-runtime": the torch wheels from PyPI bring
# their own cuBLAS, cuDNN, NCCL ... (about 2.7 GB), and the larger images would hold a second
# copy. torch 2.11 (cu130) needs a host driver for CUDA 13 (>= 580).
# Size, estimated (no Docker engine where this was written): ~5.5 GB unpacked, ~3.2 GB
# compressed; 5.0 GB of it is the venv, 3.8 GB of that torch and its CUDA libraries.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- build: the locked environment. uv, its cache, build backends and apt lists stay here ----
FROM ${CUDA_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's own Python 3.12, the same file in both stages (the venv links to it).
# Not pinned (DL3008, consciously): the archive drops superseded versions, so a pin breaks
# the build at the next security update; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON=/usr/bin/python3.12 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /app
COPY pyproject.toml uv.lock ./
# The dependencies only (no dev group: no pytest, ruff, playwright); the code runs from /app.
# Byte-compiled: every process imports torch and lerobot, ~13 s each without .pyc files.
# Then what nothing here runs (0.8 GB): triton (torch.compile only), torch's C++ headers, and
# cmake (a build tool lerobot lists as a dependency).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project \
    && rm -rf /app/.venv/lib/python3.12/site-packages/triton \
        /app/.venv/lib/python3.12/site-packages/torch/include \
        /app/.venv/lib/python3.12/site-packages/cmake

# ---- runtime -------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# python3.12 unpinned as in the build stage (DL3008). The EGL libraries: the simulator
# (SO101_PROFILE=sim) renders its cameras headless with MuJoCo's EGL backend (Mesa in software;
# with `--gpus all` NVIDIA's EGL).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 libegl1 libegl-mesa0 \
        libgl1-mesa-dri libgl1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin so101
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY supervisord.conf pyproject.toml ./
COPY bus/ bus/
COPY core/ core/
COPY drivers/ drivers/
COPY workers/ workers/
COPY configs/ configs/
COPY scripts/stack_env.sh scripts/docker-entrypoint.sh scripts/
COPY datasets/ datasets/
COPY checkpoints/ checkpoints/
# The code, venv, checkpoints and datasets stay root's (read-only to the service); what it
# writes goes to logs/, run/ (supervisord's socket) and recordings/: mount volumes there to keep.
RUN mkdir -p logs run recordings && chown 10001:10001 logs run recordings
ENV PATH=/app/.venv/bin:$PATH \
    TASK=lift \
    DEVICE=auto \
    SO101_PROFILE=fake \
    SO101_DASHBOARD_ARGS=--host=0.0.0.0 \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl
# so101, by number (hadolint DL3066: a name may not resolve on the host side).
USER 10001:10001
# The dashboard. The bus stays on loopback inside the container unless given keys (README).
EXPOSE 9000
# Healthy while the hub answers and the task's policy has a live worker.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["sh", "-c", "python -m bus.status --require=\"[policy/$TASK]\" \
        --config_path=\"${SO101_BUS_CONFIG:-configs/bus.yaml}\" >/dev/null"]
ENTRYPOINT ["bash", "/app/scripts/docker-entrypoint.sh"]
