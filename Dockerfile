# One image for the web server and the Celery workers of a lotteryweb lab server.
#
#   CPU (default):  docker build -t lotteryweb .
#   CUDA:           docker build -t lotteryweb:cuda \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#
# The CPU default installs PyTorch's CPU wheel (about 200 MB instead of several GB of CUDA
# libraries); a CUDA base image gets the matching CUDA wheel from TORCH_INDEX_URL.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=lotteryweb.settings LOTTERYWEB_PRODUCTION=1 \
    LOTTERYWEB_RUNS_DIR=/var/lib/lotteryweb/runs LOTTERYWEB_DATA_DIR=/var/lib/lotteryweb/data

# Python where the base image has none (CUDA images); Fashion-MNIST from Debian/Ubuntu when available
# (the generated `synthetic` dataset always is; MNIST/CIFAR-10 go into the data volume).
RUN apt-get update \
 && (command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3 python3-venv) \
 && (apt-get install -y --no-install-recommends dataset-fashion-mnist || echo "dataset-fashion-mnist not available here") \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app
COPY requirements.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 \
 && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install -r requirements.txt
COPY manage.py ./
COPY lotteryweb ./lotteryweb
COPY frontend ./frontend
COPY trainer ./trainer
COPY scripts/docker_entrypoint.sh ./scripts/docker_entrypoint.sh

RUN useradd --create-home --uid 1000 lotteryweb \
 && mkdir -p /var/lib/lotteryweb/runs /var/lib/lotteryweb/data \
 && chown -R lotteryweb /var/lib/lotteryweb
USER lotteryweb
EXPOSE 8000
ENTRYPOINT ["scripts/docker_entrypoint.sh"]
# The web server; the worker services override the command (see docker-compose.yml).
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "lotteryweb.asgi:application"]
