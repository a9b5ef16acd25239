#!/usr/bin/env bash
# Sets up what is missing, then runs a small IMP demo on Fashion-MNIST from the CLI.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m trainer run --dataset fashion_mnist --model lenet_300_100 --optimizer adam --lr 0.0012 \
  --training-steps 2ep --eval-interval 500it --rounds 3 --layer-fractions fc3.weight=0.1 --controls random_reinit "$@"
