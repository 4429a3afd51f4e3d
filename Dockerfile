# syntax=docker/dockerfile:1
# The zoo's model server as a container: a drop-in for the tensorflow/serving image.
#   docker build -t tfzoo .       # bakes ./models, when present, and the pretrained catalogue
#                                 # (pretrained/, installed offline) into /models
#   docker run -p 8500:8500 -p 8501:8501 tfzoo                      # serves every baked model
#   docker run -p 8501:8501 -v $PWD/m:/models/m -e MODEL_NAME=m tfzoo --rest_api_timeout_in_ms=5000
# Same environment as tensorflow/serving (MODEL_NAME, MODEL_BASE_PATH); extra arguments are
# passed to `zoo serve` (serving/docker_entrypoint.py). Linted by hadolint in the test suite.
# BASE: any image with Python 3.11+ and its venv module: the official one for users; where no
# registry can be reached, a local Debian base (scripts/check_image.sh makes one).
ARG BASE=python:3.11-slim
FROM ${BASE}

# The package lives in its own venv: Debian's Python refuses installs into the system (PEP 668).
ENV PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_BASE_PATH=/models \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zoo ./zoo
COPY training ./training
COPY catalogue ./catalogue
COPY serving ./serving
COPY tfzoo ./tfzoo
COPY pretrained ./pretrained
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 serving \
    && mkdir -p /models
# the models in ./models (by `make serve` or `zoo export`), if any, then every pretrained
# artifact not already there (the same install as `make serve`)
RUN --mount=type=bind,source=.,target=/src \
    if [ -d /src/models ]; then cp -r /src/models/. /models/; fi \
    && TFZOO_PRETRAINED=/app/pretrained TFZOO_OFFLINE=1 TFZOO_CACHE=/tmp/tfzoo-cache \
       python -m catalogue.bootstrap --models /models \
    && rm -rf /tmp/tfzoo-cache \
    && chown -R serving /models
USER 1000

EXPOSE 8500 8501
ENTRYPOINT ["python", "-m", "serving.docker_entrypoint"]
