"""Least-squares reconstruction after channel pruning, proven exact where exactness is possible.

Every model here is built so that the pruned model CAN reproduce the
original: each layer that loses channels has "twin" filters, the second
half of its output channels being exactly half the first half (bias
included).  L1 selection then removes the twins, and every op between the
layer and its consumers (ReLU, MaxPool, Flatten, Transpose, Concat, a
depthwise conv with twin kernels, a residual Add of two twin layers) keeps a
removed channel equal to half a kept one.  So a consumer refit by least
squares must reproduce the original outputs, while the same pruning without
the refit must not: each test checks both.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune import ir as irx
from onnxprune.errors import InputError
from onnxprune.options import ChannelOptions, LayerOptions
from onnxprune.passes.channels import ChannelPruningPass, ChannelResult, plan_channel_pruning
from onnxprune.passes.layers import LayerBypassPass
from onnxprune.reconstruct.normal_equations import ChannelwiseEquations, NormalEquations
from tests.conftest import run_onnx
from tests.test_channels import Net

# The refit solves normal equations accumulated in float32 products and pulls toward the sliced start weight
# with a small ridge, so "exact" is exact up to that ridge and float32 rounding: 1e-4 relative is well above both.
RTOL, ATOL = 1e-4, 1e-4


def twin_filters(net: Net, cout: int, per_filter: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias whose second half of output channels is half the first half.

    Every first-half filter has an L1 norm in [1, 1.5), so every twin (at most 0.75) scores below every
    first-half filter and L1 selection at ratio 0.5 removes exactly the twins.
    """
    half = cout // 2
    weight = net.weight(half, *per_filter)
    scale = net.rng.uniform(1.0, 1.5, half) / np.abs(weight).reshape(half, -1).sum(axis=1)
    weight = (weight * scale.reshape(-1, *[1] * len(per_filter))).astype(np.float32)
    bias = net.weight(half)
    return np.concatenate([weight, 0.5 * weight]), np.concatenate([bias, 0.5 * bias])


def twin_conv(net: Net, x: str, cin: int, cout: int, k: int = 3, group: int = 1) -> str:
    weight, bias = twin_filters(net, cout, (cin // group, k, k))
    return net.op("Conv", [x, net.const("w", weight), net.const("b", bias)], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def chain() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=10)
    y = net.relu(twin_conv(net, net.input, 3, 8))
    return net.model(net.conv(y, 8, 6))


def depthwise_between() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=11)
    y = net.relu(twin_conv(net, net.input, 3, 8, k=1))
    _, bias = twin_filters(net, 8, (1, 3, 3))
    # One kernel for every channel (only the bias halves): a twin stays half its pair, and the depthwise
    # layer's share of each channel's L1 score is the same everywhere, so the twins remain the weaker half.
    kernels = np.repeat(net.weight(1, 1, 3, 3), 8, axis=0)
    y = net.op("Conv", [y, net.const("w", kernels), net.const("b", bias)], kernel_shape=[3, 3], pads=[1] * 4, group=8)
    return net.model(net.conv(net.relu(y), 8, 6, k=1, pad=0))


def flatten_gemm() -> onnx.ModelProto:
    net = Net(shape=(16, 3, 8, 8), seed=12)  # one row per sample: enough samples for a well-posed fit
    y = net.op("MaxPool", [net.relu(twin_conv(net, net.input, 3, 8))], kernel_shape=[2, 2], strides=[2, 2])
    return net.model(net.gemm(net.op("Flatten", [y]), 8 * 16, 5))


def transpose_matmul() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 4, 4), seed=13)
    y = net.op("Transpose", [net.relu(twin_conv(net, net.input, 3, 8))], perm=[0, 2, 3, 1])
    return net.model(net.matmul(y, 8, 6))


def kept_conv(net: Net, x: str, cin: int, cout: int) -> str:
    """A conv whose output channels the tests keep (its output value is named ``kept_*``)."""
    name = net.name("kept_")
    net.nodes.append(helper.make_node("Conv", [x, net.const("w", net.weight(cout, cin, 1, 1))], [name], name=name, kernel_shape=[1, 1]))
    return name


def residual_two_consumers() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=14)
    stem = net.relu(twin_conv(net, net.input, 3, 8))
    inner = net.relu(twin_conv(net, stem, 8, 6))
    merged = net.relu(net.op("Add", [stem, twin_conv(net, inner, 6, 8)]))
    return net.model(net.conv(merged, 8, 4), net.conv(merged, 8, 3, k=1, pad=0))


def concat_offset() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=15)
    kept = net.relu(kept_conv(net, net.input, 3, 4))
    joined = net.op("Concat", [kept, net.relu(twin_conv(net, net.input, 3, 8))], axis=1)
    return net.model(net.conv(joined, 12, 5))


def upsample() -> onnx.ModelProto:
    net = Net(shape=(2, 3, 8, 8), seed=20)
    y = net.relu(twin_conv(net, net.input, 3, 8))
    weight, bias = net.const("tw", net.weight(8, 5, 2, 2)), net.const("tb", net.weight(5))
    return net.model(net.op("ConvTranspose", [y, weight, bias], kernel_shape=[2, 2], strides=[2, 2]))


MODELS = {
    "conv": chain,
    "depthwise_then_conv": depthwise_between,
    "flatten_gemm": flatten_gemm,
    "transpose_matmul": transpose_matmul,
    "residual_two_consumers": residual_two_consumers,
    "concat_offset": concat_offset,
    "conv_transpose_upsample": upsample,
}
OPTIONS = ChannelOptions(ratio=0.5, round_to=1, exclude=("kept_*",), importance="l1")  # L1 removes exactly the twins


def calibration(model: onnx.ModelProto, batches: int = 20, seed: int = 100) -> list[dict[str, np.ndarray]]:
    shape = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(batches)]


def pruned(model: onnx.ModelProto, options: ChannelOptions, batches: list[dict[str, np.ndarray]] | None) -> tuple[onnx.ModelProto, ChannelResult]:
    ir_model = irx.from_proto(model)
    result = ChannelPruningPass(options, calibration=batches)(ir_model)
    return irx.to_proto(ir_model), result


def max_relative_difference(first: onnx.ModelProto, second: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    return max(
        float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)) for a, b in zip(run_onnx(first, feeds), run_onnx(second, feeds))
    )


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_refit_reproduces_an_exactly_representable_original(build) -> None:
    original = build()
    model, result = pruned(original, OPTIONS, calibration(original))
    assert result.modified and result.plan is not None
    assert result.report.summary["reconstruction"]["refit_layers"] >= 1
    fresh = calibration(original, batches=1, seed=7)[0]  # inputs the refit never saw
    for expected, actual in zip(run_onnx(original, fresh), run_onnx(model, fresh)):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)
    without_refit, _ = pruned(original, OPTIONS, None)
    assert max_relative_difference(original, without_refit, fresh) > 0.05


def test_layers_after_the_consumer_are_refit_on_the_pruned_inputs() -> None:
    """A wave per depth: the consumer's consumer sees the refit consumer's outputs, and every refit lowers its error."""
    net = Net(shape=(2, 3, 8, 8), seed=16)
    y = net.relu(twin_conv(net, net.input, 3, 8))
    y = net.relu(net.conv(y, 8, 6))
    original = net.model(net.conv(y, 6, 4))
    _, result = pruned(original, ChannelOptions(ratio=0.5, round_to=1), calibration(original))
    reconstruction = result.report.summary["reconstruction"]
    assert reconstruction["waves"] == reconstruction["refit_layers"] >= 2
    for layer in reconstruction["layers"]:
        assert layer["error_after"] < layer["error_before"]


def test_reconstruct_false_leaves_the_sliced_weights() -> None:
    original = chain()
    off, result = pruned(original, dataclasses.replace(OPTIONS, reconstruct=False), calibration(original))
    plain, _ = pruned(original, OPTIONS, None)
    assert "reconstruction" not in result.report.summary
    assert off.SerializeToString() == plain.SerializeToString()


def test_normal_equations_stream_to_the_batch_solution() -> None:
    """Sums added batch by batch solve the same problem as one least squares over all rows."""
    rng = np.random.default_rng(0)
    inputs, true_weight = rng.standard_normal((600, 5)), rng.standard_normal((3, 5))
    targets = inputs @ true_weight.T + np.array([1.0, -2.0, 0.5])
    equations = NormalEquations(features=5, outputs=3, bias=True)
    for rows in np.array_split(np.arange(600), 7):
        equations.add(inputs[rows], targets[rows])
    solved = equations.solve(np.zeros((3, 6)))
    np.testing.assert_allclose(solved[:, :5], true_weight, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(solved[:, 5], [1.0, -2.0, 0.5], rtol=1e-4, atol=1e-4)
    assert equations.relative_error(solved) < 1e-8
    assert equations.relative_error(np.zeros((3, 6))) == pytest.approx(1.0)


def test_underdetermined_fit_stays_near_its_start() -> None:
    """Fewer rows than features: the ridge keeps the solution close to the start instead of fitting noise."""
    rng = np.random.default_rng(1)
    start = rng.standard_normal((2, 40))
    inputs = rng.standard_normal((10, 40))
    equations = NormalEquations(features=40, outputs=2, bias=False)
    equations.add(inputs, inputs @ start.T + 0.1 * rng.standard_normal((10, 2)))
    solved = equations.solve(start)
    assert np.linalg.norm(solved - start) < 0.1 * np.linalg.norm(start)


def test_data_importance_removes_a_large_redundant_channel_before_a_small_unique_one() -> None:
    """L1 sees filter size; the data score sees what a refit cannot recover.

    Channels 0 and 1 carry the same large filter (1 is twice 0), channels 2
    and 3 small filters of their own.  Removing one channel: L1 takes a small
    unique one and loses its information; the data score takes one of the
    twins, which the refit makes up for exactly.
    """
    net = Net(shape=(2, 3, 8, 8), seed=17)
    large = net.weight(1, 3, 3, 3) * 4
    weight = np.concatenate([large, 2 * large, net.weight(2, 3, 3, 3) * 0.2]).astype(np.float32)
    y = net.op("Conv", [net.input, net.const("w", weight)], kernel_shape=[3, 3], pads=[1] * 4)
    consumer = net.weight(5, 4, 3, 3)
    consumer[:, 2:] *= 20  # what the small channels carry matters as much downstream as the large one
    original = net.model(net.op("Conv", [net.op("Relu", [y]), net.const("w", consumer)], kernel_shape=[3, 3], pads=[1] * 4))
    options = ChannelOptions(ratio=0.25, round_to=1)
    _, by_l1 = pruned(original, dataclasses.replace(options, importance="l1"), calibration(original))
    model, by_data = pruned(original, options, calibration(original))
    assert by_l1.plan is not None and by_data.plan is not None
    assert by_data.plan.importance == "data" and by_data.report.summary["importance"] == "data"
    assert by_l1.plan.groups[0].kept["conv2"] in ([0, 1, 2], [0, 1, 3])
    assert by_data.plan.groups[0].kept["conv2"] in ([0, 2, 3], [1, 2, 3])
    fresh = calibration(original, batches=1, seed=8)[0]
    for expected, actual in zip(run_onnx(original, fresh), run_onnx(model, fresh)):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_data_importance_needs_calibration_data() -> None:
    with pytest.raises(InputError, match="importance 'data' scores channels on calibration data"):
        plan_channel_pruning(irx.from_proto(chain()), ChannelOptions(ratio=0.5, importance="data"))


def test_a_depthwise_conv_is_refit_channel_by_channel_when_its_input_drifts() -> None:
    """Upstream of the depthwise conv a pruned layer is refit imperfectly; the depthwise conv corrects per channel."""
    net = Net(shape=(4, 3, 8, 8), seed=18)
    y = net.relu(net.conv(net.input, 3, 16, k=3))
    y = net.relu(net.conv(y, 16, 8, k=1, pad=0))
    y = net.relu(net.conv(y, 8, 8, group=8))
    original = net.model(net.conv(y, 8, 6, k=1, pad=0))
    depthwise = next(node.name for node in original.graph.node if any(a.name == "group" and a.i == 8 for a in node.attribute))
    _, result = pruned(original, ChannelOptions(ratio=0.5, round_to=1), calibration(original))
    refit = {layer["layer"]: layer for layer in result.report.summary["reconstruction"]["layers"]}
    layer = refit[f"Conv '{depthwise}'"]
    assert layer["features"] == 9  # one 3x3 kernel per channel, each fit on its own channel
    assert layer["error_after"] < layer["error_before"]


def test_channelwise_equations_fit_each_channel_on_its_own_input() -> None:
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((500, 3, 4))
    weights, biases = rng.standard_normal((3, 4)), rng.standard_normal(3)
    targets = np.einsum("nck,ck->nc", inputs, weights) + biases
    equations = ChannelwiseEquations(channels=3, features=4)
    for rows in np.array_split(np.arange(500), 3):
        equations.add(inputs[rows], targets[rows])
    solved = equations.solve(np.zeros((3, 5)))
    np.testing.assert_allclose(solved[:, :4], weights, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(solved[:, 4], biases, rtol=1e-4, atol=1e-4)
    assert equations.relative_error(solved) < 1e-8


def test_bypassed_layer_is_made_up_for_by_refitting_its_consumer() -> None:
    """Layer bypass uses the same refit: the layer after the bypassed one is fit to the original's output."""
    net = Net(shape=(4, 3, 8, 8), seed=19)
    y = net.relu(net.conv(net.input, 3, 8))
    middle = net.conv(y, 8, 8)
    original = net.model(net.conv(net.relu(middle), 8, 5))
    layer_name = next(node.name for node in original.graph.node if node.output[0] == middle)
    batches = calibration(original)
    results = {}
    for refit in (False, True):
        model = irx.from_proto(original)
        result = LayerBypassPass(LayerOptions(bypass=(layer_name,)), calibration=batches, refit=refit)(model)
        assert result.modified
        results[refit] = (irx.to_proto(model), result)
    assert "reconstruction" not in results[False][1].report.summary
    reconstruction = results[True][1].report.summary["reconstruction"]
    assert [layer["layer"] for layer in reconstruction["layers"]] == [f"Conv '{original.graph.node[-1].name}'"]
    fresh = calibration(original, batches=1, seed=9)[0]
    (expected,) = run_onnx(original, fresh)
    errors = {refit: np.linalg.norm(run_onnx(model, fresh)[0] - expected) / np.linalg.norm(expected) for refit, (model, _) in results.items()}
    assert errors[True] < 0.7 * errors[False]  # one conv cannot fully stand in for conv-relu-conv; it recovers a good part


def test_python_api_takes_calibration_arrays() -> None:
    import onnxprune
    from tests.conftest import MODELS_DIR

    images = np.load(MODELS_DIR / "digits_calibration.npz")["input"]
    by_array = onnxprune.prune(MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, calibration=images, validate=False, bench=False, quiet=True)
    by_path = onnxprune.prune(
        MODELS_DIR / "digits_cnn.onnx", channel_ratio=0.5, calibration=str(MODELS_DIR / "digits_calibration.npz"), validate=False, bench=False, quiet=True
    )
    assert by_array.report["calibration"]["fit_samples"] == by_path.report["calibration"]["fit_samples"] == 192
    assert irx.to_proto(by_array.model).SerializeToString() == irx.to_proto(by_path.model).SerializeToString()


def test_ridge_is_chosen_on_check_rows_and_an_overfit_is_refused() -> None:
    """A fit that only chases noise in its own rows is refused when rows it did not see disagree.

    The fit rows ask for random outputs (30 features, 20 rows: any weight can
    match them); the check rows are exactly what the current weight computes.
    Judged on the check rows no refit beats the start, so the layer is left
    alone with the reason; judged on its own rows (no check part) it would be
    rewritten.
    """
    from onnxprune.reconstruct.linear import linear_layer
    from onnxprune.reconstruct.refit import RefitReport, _refit_layer, _Target

    net = Net(shape=(20, 30), seed=21)
    original = net.model(net.gemm(net.input, 30, 4))
    rng = np.random.default_rng(3)
    outcomes = {}
    for judged_on in ("check", "fit"):
        model = irx.from_proto(original)
        layer = linear_layer(next(iter(model.graph)))
        assert not isinstance(layer, str) and layer.bias is not None
        fit, check = NormalEquations(30, 4, bias=True), NormalEquations(30, 4, bias=True)
        fit.add(rng.standard_normal((20, 30)), rng.standard_normal((20, 4)))
        unseen = rng.standard_normal((200, 30))
        check.add(unseen, layer.outputs(unseen))
        report = RefitReport()
        _refit_layer(_Target(layer, layer, 0), fit, check if judged_on == "check" else fit, model, report)
        outcomes[judged_on] = report
    assert not outcomes["check"].layers and "no fit lowered its output error on check samples" in outcomes["check"].skipped[0][1]
    assert len(outcomes["fit"].layers) == 1


@pytest.mark.parametrize("kind", ["dense", "channelwise"])
def test_pooled_sums_equal_the_sums_of_every_row_added_to_one(kind: str) -> None:
    rng = np.random.default_rng(5)
    if kind == "dense":
        make = lambda: NormalEquations(6, 3, bias=True)  # noqa: E731
        batches = [(rng.standard_normal((n, 6)), rng.standard_normal((n, 3))) for n in (7, 11)]
    else:
        make = lambda: ChannelwiseEquations(4, 9)  # noqa: E731
        batches = [(rng.standard_normal((n, 4, 9)), rng.standard_normal((n, 4))) for n in (7, 11)]
    first, second, together = make(), make(), make()
    first.add(*batches[0])
    second.add(*batches[1])
    for batch in batches:
        together.add(*batch)
    pooled = first.pooled(second)
    assert pooled.rows == together.rows == 18 and first.rows == 7
    np.testing.assert_allclose(pooled.gram, together.gram, rtol=1e-6)
    np.testing.assert_allclose(pooled.cross, together.cross, rtol=1e-6)
    np.testing.assert_allclose(pooled.target_energy, together.target_energy, rtol=1e-6)


def test_the_chosen_ridge_solves_again_on_the_fit_and_check_rows_together() -> None:
    """A layer short of fit rows is solved on the check rows too once they have chosen its ridge strength.

    The outputs are an exact linear map of the inputs.  The 20 fit rows for
    10 features are too few for a well-posed fit, so the ridge pulls the fit
    toward the start; with the 30 check rows the layer has 5 rows per
    feature and the exact map comes out.
    """
    from onnxprune.reconstruct.linear import linear_layer
    from onnxprune.reconstruct.refit import RefitReport, _refit_layer, _Target

    net = Net(shape=(20, 10), seed=22)
    original = net.model(net.gemm(net.input, 10, 4))
    model = irx.from_proto(original)
    layer = linear_layer(next(iter(model.graph)))
    assert not isinstance(layer, str) and layer.bias is not None
    rng = np.random.default_rng(4)
    exact_weight, exact_bias = rng.standard_normal((4, 10)), rng.standard_normal(4)
    fit, check = NormalEquations(10, 4, bias=True), NormalEquations(10, 4, bias=True)
    for equations, rows in ((fit, 20), (check, 30)):
        inputs = rng.standard_normal((rows, 10))
        equations.add(inputs, inputs @ exact_weight.T + exact_bias)
    report = RefitReport()
    _refit_layer(_Target(layer, layer, 0), fit, check, model, report)
    refit = linear_layer(next(iter(model.graph)))
    assert len(report.layers) == 1 and not isinstance(refit, str) and refit.bias is not None
    np.testing.assert_allclose(refit.weight, exact_weight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(refit.bias, exact_bias, rtol=1e-4, atol=1e-5)
