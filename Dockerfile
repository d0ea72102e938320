# syntax=docker/dockerfile:1
# Any warmstart app on a CUDA machine, installed from the wheels that `uv build --all-packages` writes to
# dist/ (the core's and the app's; no monorepo checkout in the image). Build from the repository root,
# naming the app (lang, eo, 3d, speech, rl or code):
#   uv build --all-packages && docker build --build-arg APP=eo -t warmstart-eo .
# Run:  docker run --gpus all -v $PWD/data:/data -v $PWD/runs:/work/runs warmstart-eo demo
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG APP

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SDL_VIDEODRIVER=dummy

RUN if [ -z "$APP" ]; then echo "pass --build-arg APP=<lang|eo|3d|speech|rl|code>" >&2; exit 1; fi

# the base image fixes the distribution; its python3.12 is the one Ubuntu 24.04 ships
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# the core's wheel (warmstart-*) and this app's (warmstart_<app>-*); the other apps' wheels stay out
COPY dist/warmstart-*.whl dist/warmstart_${APP}-*.whl /tmp/dist/
RUN uv venv /opt/venv --python /usr/bin/python3.12 \
    && uv pip install --python /opt/venv/bin/python /tmp/dist/*.whl \
    && rm -rf /tmp/dist /root/.cache \
    && ln -s "/opt/venv/bin/warmstart-${APP}" /usr/local/bin/warmstart-app

WORKDIR /work
ENTRYPOINT ["warmstart-app"]
CMD ["--help"]
