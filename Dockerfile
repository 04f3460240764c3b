# syntax=docker/dockerfile:1
# DALL·E Flow server: the gateway and every executor in one image (Kubernetes runs it once per executor).
#   docker build -t dalle-flow .
#   docker run --gpus all -p 51005-51007:51005-51007 -v dalle-weights:/weights -v dalle-data:/data dalle-flow
# Toggles are environment variables (docker run -e DISABLE_DALLE_MEGA=1 ...); see README, "Docker" and "Toggles".

# The CUDA base, not its runtime flavour: the pinned torch wheels bring the CUDA 13 runtime, cuBLAS and cuDNN
# themselves (the nvidia-* packages in requirements.txt); the base adds what the NVIDIA container runtime reads.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11, the version requirements.txt is compiled for (Ubuntu 24.04 ships 3.12), as `python3` so that the
# README's install command runs unchanged. Ubuntu's package versions move with its security updates: not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
    && apt-get purge -y software-properties-common && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# a user of its own; /weights (read) and /data (the store's database, written) are volumes
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin dalle \
    && mkdir -p /app /weights /data/workspace \
    && chown dalle:dalle /app /weights /data /data/workspace
WORKDIR /app
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 10001:10001

# What `pip install -e .` needs, then the README's "install the server alone" command, verbatim (tests/test_deploy.py
# compares them): the runtime lock only, no test tools. The pip cache lives in a build cache, outside the image, so a
# rebuild does not download torch again.
COPY --chown=dalle:dalle requirements.txt pyproject.toml README.md ./
COPY --chown=dalle:dalle dalle_flow/ dalle_flow/
RUN --mount=type=cache,target=/home/dalle/.cache/pip,uid=10001,gid=10001 \
    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e .
COPY --chown=dalle:dalle flow.yml ./
COPY --chown=dalle:dalle executors/ executors/

# Weights: DALLE_FLOW_WEIGHTS_DIR first, then the caches, all on the volume so downloads persist; fill it once with
#   docker run --rm -v dalle-weights:/weights dalle-flow python -m dalle_flow weights download --dir /weights
ENV PATH=/app/.venv/bin:$PATH \
    DALLE_FLOW_WEIGHTS_DIR=/weights \
    DALLE_FLOW_CACHE=/weights/cache \
    HF_HOME=/weights/huggingface
VOLUME ["/weights", "/data"]

EXPOSE 51005 51006 51007
# `jina ping flow`: a dry run through the gateway and every executor (`ping gateway` would only check the gateway);
# real checkpoints take minutes to load, hence the start period. With TLS (--tls-cert), ping grpcs:// instead:
#   docker run --health-cmd 'jina ping flow grpcs://127.0.0.1:51005' ...
HEALTHCHECK --interval=30s --timeout=30s --start-period=20m --retries=3 \
    CMD ["jina", "ping", "flow", "grpc://127.0.0.1:51005"]
CMD ["python", "-m", "dalle_flow", "serve", "--workspace", "/data/workspace"]
