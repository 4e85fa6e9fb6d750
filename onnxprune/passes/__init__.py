"""Pruning passes over the onnx-ir graph, one module per pass family."""
