"""Accuracy kept without training: least-squares reconstruction of the layers after a pruning edit.

:mod:`~.capture` reads intermediate values with onnxruntime,
:mod:`~.linear` views a weight layer as a matrix,
:mod:`~.normal_equations` accumulates and solves the ridge least squares,
:mod:`~.refit` drives the sequential refit over the graph.
"""
