"""Calibration data: every accepted form, the fit/held-out split, and every refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from onnxprune import ir as irx
from onnxprune import runtime
from onnxprune.calibration import DEFAULT_BATCH_SIZE, CalibrationData, held_out_mask, load_calibration
from onnxprune.errors import InputError
from tests.conftest import MODELS_DIR

Dims = Sequence[int | str | None]


def _model(inputs: dict[str, Dims | None], dtype: int = TensorProto.FLOAT) -> ir.Model:
    """Identity per input; a dim is a number, a name (dim_param), None (unknown) or -1 (as some exporters write)."""
    values, outputs, nodes = [], [], []
    for name, dims in inputs.items():
        if dims is None:
            values.append(helper.make_tensor_value_info(name, dtype, None))
        else:
            value = helper.make_tensor_value_info(name, dtype, [dim if dim is not None else "tmp" for dim in dims])
            for proto_dim, dim in zip(value.type.tensor_type.shape.dim, dims):
                if dim is None:
                    proto_dim.Clear()  # neither dim_value nor dim_param: unknown
            values.append(value)
        output = helper.make_tensor_value_info(f"{name}_out", dtype, None)
        output.type.tensor_type.CopyFrom(values[-1].type.tensor_type)
        outputs.append(output)
        nodes.append(helper.make_node("Identity", [name], [f"{name}_out"]))
    proto = helper.make_model(helper.make_graph(nodes, "g", values, outputs), opset_imports=[helper.make_opsetid("", 17)])
    if all(dims is not None for dims in inputs.values()):  # the checker wants a shape; onnxruntime does not
        onnx.checker.check_model(proto)
    return irx.from_proto(proto)


X_MODEL = {"x": ["N", 2, 3]}
ROWS = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)  # sample i is recognisable: ROWS[i, 0, 0] == 6 * i
LABELS = np.arange(10, dtype=np.int64) % 3


def _ids(batches: list[dict[str, np.ndarray]], name: str = "x") -> list[int]:
    """Which samples the batches hold, in order (batches joined)."""
    return [int(row) // 6 for batch in batches for row in batch[name][:, 0, 0]]


def _same(a: CalibrationData, b: CalibrationData) -> None:
    for left, right in ((a.fit, b.fit), (a.held_out, b.held_out)):
        assert len(left) == len(right)
        for one, other in zip(left, right):
            assert one.keys() == other.keys()
            for name in one:
                assert one[name].dtype == other[name].dtype
                np.testing.assert_array_equal(one[name], other[name])
    for left_labels, right_labels in ((a.fit_labels, b.fit_labels), (a.held_out_labels, b.held_out_labels)):
        assert left_labels is not None and right_labels is not None
        np.testing.assert_array_equal(left_labels, right_labels)


# --- every form, the same batches ----------------------------------------------------------------------


def _forms(tmp_path: Path) -> dict[str, tuple[Any, Any]]:
    """(data, labels argument) per accepted form, all holding ROWS and LABELS."""
    np.savez(tmp_path / "all.npz", x=ROWS, labels=LABELS)
    parts = tmp_path / "npz_parts"
    parts.mkdir()
    np.savez(parts / "b.npz", x=ROWS[4:], labels=LABELS[4:])  # written first: the order is by name, not by creation
    np.savez(parts / "a.npz", x=ROWS[:4], labels=LABELS[:4])
    (parts / "README.txt").write_text("other files are ignored")
    chunks = tmp_path / "npy_chunks"
    chunks.mkdir()
    np.save(chunks / "part02.npy", ROWS[3:])
    np.save(chunks / "part01.npy", ROWS[:3])
    np.save(chunks / "labels.npy", LABELS)
    named = tmp_path / "npy_named"
    named.mkdir()
    np.save(named / "x.npy", ROWS)
    np.save(named / "labels.npy", LABELS)
    np.save(tmp_path / "labels.npy", LABELS)
    batches = [{"x": ROWS[:3], "labels": LABELS[:3]}, {"x": ROWS[3:7], "labels": LABELS[3:7]}, {"x": ROWS[7:], "labels": LABELS[7:]}]
    return {
        "npz": (str(tmp_path / "all.npz"), None),
        "npz path object": (tmp_path / "all.npz", None),
        "folder of npz": (parts, None),
        "folder of npy chunks": (chunks, None),
        "folder of <input>.npy": (named, None),
        "array": (ROWS, LABELS),
        "array, labels from a file": (ROWS, tmp_path / "labels.npy"),
        "array, labels from an npz": (ROWS, tmp_path / "all.npz"),
        "dict": ({"x": ROWS, "labels": LABELS}, None),
        "list of dicts": (batches, None),
        "generator of dicts": ((batch for batch in batches), None),
    }


def test_every_form_gives_the_same_batches(tmp_path: Path) -> None:
    model = _model(X_MODEL)
    loaded = {form: load_calibration(data, model, labels=labels, batch_size=4) for form, (data, labels) in _forms(tmp_path).items()}
    reference = loaded["npz"]
    # 10 samples, a quarter held out: round(2.5) = 3, every 4th from the 2nd.
    assert _ids(reference.fit) == [0, 2, 3, 4, 6, 7, 8] and _ids(reference.held_out) == [1, 5, 9]
    assert [len(batch["x"]) for batch in reference.fit] == [4, 3] and [len(batch["x"]) for batch in reference.held_out] == [3]
    assert reference.fit_labels is not None and reference.held_out_labels is not None
    assert reference.fit_labels.tolist() == LABELS[[0, 2, 3, 4, 6, 7, 8]].tolist()
    assert reference.held_out_labels.tolist() == LABELS[[1, 5, 9]].tolist()
    assert (reference.fit_samples, reference.held_out_samples, reference.notes) == (7, 3, ())
    assert reference.source == str(tmp_path / "all.npz")
    for form, data in loaded.items():
        try:
            _same(data, reference)
        except AssertionError as error:
            raise AssertionError(f"{form}: {error}") from None
    assert loaded["dict"].source == "arrays given in Python"
    assert loaded["array, labels from a file"].source.endswith(f"(labels: {tmp_path / 'labels.npy'})")


def test_batches_are_plain_float32_arrays_that_onnxruntime_runs(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", ROWS)
    model = _model(X_MODEL)
    data = load_calibration(tmp_path / "x.npy", model, batch_size=3)
    session = runtime.make_session(model, optimize=False)
    for batch in data.fit + data.held_out:
        assert type(batch["x"]) is np.ndarray and batch["x"].flags.c_contiguous  # not a memory map of the file
        np.testing.assert_array_equal(runtime.run(session, batch)["x_out"], batch["x"])


def test_two_inputs_from_a_dict_and_from_a_folder_of_input_named_npy(tmp_path: Path) -> None:
    model = _model({"x": ["N", 2, 3], "z": ["N", 4]})
    z = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "x.npy", ROWS)
    np.save(tmp_path / "z.npy", z)
    from_folder = load_calibration(tmp_path, model, batch_size=5)
    from_dict = load_calibration({"x": ROWS, "z": z}, model, batch_size=5)
    for data in (from_folder, from_dict):
        assert data.fit_labels is None and data.held_out_labels is None
        assert _ids(data.held_out) == [1, 5, 9]
        np.testing.assert_array_equal(np.concatenate([batch["z"] for batch in data.held_out]), z[[1, 5, 9]])
    np.testing.assert_array_equal(from_folder.fit[1]["z"], from_dict.fit[1]["z"])


# --- the split ------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_complete_and_independent_of_batch_size() -> None:
    count = 37
    rows = np.zeros((count, 2, 3), dtype=np.float32)
    rows[:, 0, 0] = 6 * np.arange(count)
    labels = np.repeat(np.arange(4), [10, 10, 10, 7])  # sorted by class, as test splits often are
    model = _model(X_MODEL)
    splits = set()
    for batch_size in (1, 4, 5, 64):
        data = load_calibration(rows, model, labels=labels, batch_size=batch_size)
        fit, held = _ids(data.fit), _ids(data.held_out)
        assert not set(fit) & set(held) and sorted(fit + held) == list(range(count))
        assert fit == sorted(fit) and held == sorted(held)
        assert data.fit_labels is not None and data.held_out_labels is not None
        assert data.fit_labels.tolist() == labels[fit].tolist() and data.held_out_labels.tolist() == labels[held].tolist()
        assert set(data.held_out_labels.tolist()) == set(data.fit_labels.tolist()) == {0, 1, 2, 3}
        assert all(len(batch["x"]) <= batch_size for batch in data.fit + data.held_out)
        splits.add((tuple(fit), tuple(held)))
    assert len(splits) == 1
    again = load_calibration(rows, model, labels=labels, batch_size=4)
    assert splits == {(tuple(_ids(again.fit)), tuple(_ids(again.held_out)))}


@pytest.mark.parametrize("fraction", [0.1, 0.25, 1 / 3, 0.5, 0.75])
def test_held_out_count_is_the_rounded_fraction_and_a_prefix_splits_the_same(fraction: float) -> None:
    for count in (2, 9, 40, 101):
        mask = held_out_mask(count, fraction)
        assert mask.sum() == int(np.floor(count * fraction + 0.5))
        np.testing.assert_array_equal(held_out_mask(count + 13, fraction)[:count], mask)
    assert held_out_mask(8, 0.25).tolist() == [False, True, False, False, False, True, False, False]


def test_max_samples_uses_the_first_samples_and_reads_no_further(tmp_path: Path) -> None:
    model = _model(X_MODEL)
    pulled = []

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, 10, 2):
            pulled.append(start)
            yield {"x": ROWS[start : start + 2]}

    capped = load_calibration(batches(), model, max_samples=5, labels=LABELS)
    assert pulled == [0, 2, 4], "the iterable is consumed only until max_samples are in"
    assert _ids(capped.fit) + _ids(capped.held_out) == [0, 2, 3, 4, 1]
    assert capped.held_out_labels is not None and capped.held_out_labels.tolist() == [LABELS[1]]
    np.save(tmp_path / "x.npy", ROWS)
    from_file = load_calibration(tmp_path / "x.npy", model, max_samples=5)
    assert _ids(from_file.fit) == [0, 2, 3, 4] and _ids(from_file.held_out) == [1]


def test_no_held_out_part_when_the_fraction_is_zero() -> None:
    data = load_calibration({"x": ROWS, "labels": LABELS}, _model(X_MODEL), held_out_fraction=0.0)
    assert data.held_out == [] and data.held_out_samples == 0 and _ids(data.fit) == list(range(10))
    assert data.held_out_labels is not None and len(data.held_out_labels) == 0
    assert load_calibration(ROWS[:1], _model(X_MODEL), held_out_fraction=0).fit_samples == 1


# --- dtypes and shapes ----------------------------------------------------------------------------------


def test_float64_is_cast_to_float32_with_a_note_and_float32_to_float16() -> None:
    data = load_calibration([{"x": ROWS[:5].astype(np.float64)}, {"x": ROWS[5:].astype(np.float64)}], _model(X_MODEL))
    assert data.notes == ("'x' cast from float64 to float32",), "noted once, not once per batch"
    assert all(batch["x"].dtype == np.float32 for batch in data.fit + data.held_out)
    np.testing.assert_array_equal(data.fit[0]["x"], ROWS[[0, 2, 3, 4, 6, 7, 8]])
    half = load_calibration(ROWS, _model(X_MODEL, TensorProto.FLOAT16))
    assert half.notes == ("'x' cast from float32 to float16",) and half.fit[0]["x"].dtype == np.float16
    listed = load_calibration({"x": ROWS.tolist()}, _model(X_MODEL))
    assert listed.notes == ("'x' cast from float64 to float32",)


@pytest.mark.parametrize(
    "dims",
    [["N", 3, "H", "W"], [-1, 3, -1, -1], [None, 3, None, None], ["batch", 3, None, "W"], None],
    ids=["dim_param", "minus_one", "unknown", "mixed", "undeclared"],
)
def test_symbolic_batch_and_spatial_dims_are_taken_from_the_data(dims: Dims | None) -> None:
    model = _model({"x": dims})
    rows = np.random.default_rng(0).standard_normal((9, 3, 5, 7)).astype(np.float32)
    data = load_calibration(rows, model, batch_size=4)
    assert [len(batch["x"]) for batch in data.fit] == [4, 3] and data.held_out_samples == 2
    assert data.shapes() == {"x": (4, 3, 5, 7)}
    (spec,) = runtime.input_specs(model, data_shapes=data.shapes())
    assert spec.shape == (4, 3, 5, 7)
    assert runtime.input_specs(model, {"x": (2, 3, 8, 8)}, data_shapes=data.shapes())[0].shape == (2, 3, 8, 8), "--input-shape wins"
    default = load_calibration(np.concatenate([rows] * 5), model)
    assert default.shapes()["x"][0] == DEFAULT_BATCH_SIZE
    if dims is not None:
        session = runtime.make_session(model, optimize=False)
        for batch in data.fit + data.held_out:
            runtime.run(session, batch)


def test_input_specs_still_asks_for_input_shape_without_data() -> None:
    with pytest.raises(InputError, match=r"input 'x' dim 2 is symbolic \('H'\); give it with --input-shape x=D0,D1,\.\.\."):
        runtime.input_specs(_model({"x": ["N", 3, "H", "W"]}))
    assert runtime.input_specs(_model({"x": [-1, 3, 4, 4]}))[0].shape == (1, 3, 4, 4), "a -1 batch is a symbolic batch"
    paddle = _model({"x": [-1, 3, -1, "W"]})
    assert runtime.input_specs(paddle, data_shapes={"x": (8, 9, 5, 7)})[0].shape == (8, 3, 5, 7), "data fills only symbolic dims"
    with pytest.raises(InputError, match="calibration data: 'x' has rank 2, the model's input has rank 4"):
        runtime.input_specs(_model({"x": ["N", 3, "H", "W"]}), data_shapes={"x": (1, 3)})


def test_static_batch_of_one_is_fed_one_sample_at_a_time() -> None:
    data = load_calibration({"x": ROWS, "labels": LABELS}, _model({"x": [1, 2, 3]}), batch_size=4)
    assert [batch["x"].shape for batch in data.fit] == [(1, 2, 3)] * 7 and [batch["x"].shape for batch in data.held_out] == [(1, 2, 3)] * 3
    assert _ids(data.fit) == [0, 2, 3, 4, 6, 7, 8] and data.shapes() == {"x": (1, 2, 3)}
    assert data.notes == ("batch_size 4 not used: the model takes batches of exactly 1",)
    session = runtime.make_session(_model({"x": [1, 2, 3]}), optimize=False)
    runtime.run(session, data.fit[0])


def test_static_batch_leaves_out_and_notes_samples_that_fill_no_batch() -> None:
    rows = np.concatenate([ROWS] * 2)  # 20 samples: 15 fit, 5 held out
    data = load_calibration(rows, _model({"x": [4, 2, 3]}), labels=np.arange(20))
    assert [len(batch["x"]) for batch in data.fit] == [4, 4, 4] and [len(batch["x"]) for batch in data.held_out] == [4]
    assert data.fit_labels is not None and data.held_out_labels is not None
    assert len(data.fit_labels) == 12 and data.held_out_labels.tolist() == [1, 5, 9, 13]
    assert data.notes == (
        "3 of the 15 fit samples left out: the model takes batches of exactly 4",
        "1 of the 5 held-out samples left out: the model takes batches of exactly 4",
    )


# --- refusals -------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _folder(tmp_path: Path, files: dict[str, np.ndarray | bytes]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif name.endswith(".npy"):
            np.save(folder / name, content)
        else:
            np.savez(folder / name, x=content)
    return folder


def _truncated(path: Path) -> Path:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def _renamed(path: Path, array: np.ndarray, target: Path) -> Path:
    np.save(path, array)
    return path.rename(target)


TWO_INPUTS = {"x": ["N", 2, 3], "z": ["N", 4]}
Case = Callable[[Path], tuple[Any, dict[str, Any]]]
REFUSALS: dict[str, tuple[dict[str, Dims | None], Case, str]] = {
    "unknown input": (
        X_MODEL,
        lambda p: ({"x": ROWS, "q": ROWS}, {}),
        r"the calibration dict: 'q' is not an input of the model; the model wants: x \[N, 2, 3\] float32",
    ),
    "unknown key in an npz": (
        X_MODEL,
        lambda p: (_write(p, "d.npz", x=ROWS, image=ROWS), {}),
        r"d\.npz: 'image' is not an input of the model; the model wants: x \[N, 2, 3\]",
    ),
    "missing input": (
        TWO_INPUTS,
        lambda p: (_write(p, "d.npz", x=ROWS), {}),
        r"d\.npz: no array for input 'z'; the model wants: x \[N, 2, 3\] float32; z \[N, 4\] float32",
    ),
    "array for two inputs": (TWO_INPUTS, lambda p: (ROWS, {}), r"an array can only feed a model with one input, this one has 2"),
    "wrong rank": (
        X_MODEL,
        lambda p: (_write(p, "d.npz", x=ROWS.reshape(10, 6)), {}),
        r"d\.npz: 'x' has rank 2 \(shape \[10, 6\]\); the model's input is rank 3: x \[N, 2, 3\]",
    ),
    "int dtype": (X_MODEL, lambda p: (ROWS.astype(np.int32), {}), r"the calibration array: 'x' has dtype int32; the model's input is float32"),
    "float16 for float32": (X_MODEL, lambda p: ({"x": ROWS.astype(np.float16)}, {}), r"'x' has dtype float16; the model's input is float32"),
    "static dim": (X_MODEL, lambda p: (_write(p, "d.npz", x=np.zeros((10, 5, 3), np.float32)), {}), r"d\.npz: 'x' has shape \[10, 5, 3\]; dim 1 must be 2"),
    "sample counts": (TWO_INPUTS, lambda p: ({"x": ROWS, "z": np.zeros((9, 4), np.float32)}, {}), r"inputs have different sample counts \('x' 10, 'z' 9\)"),
    "one sample": (X_MODEL, lambda p: (ROWS[:1], {}), r"1 sample; at least 2 are needed to hold some out"),
    "none held out": (X_MODEL, lambda p: (ROWS[:2], {"held_out_fraction": 0.1}), r"held_out_fraction 0.1 of 2 samples holds none out"),
    "none to fit": (X_MODEL, lambda p: (ROWS[:2], {"held_out_fraction": 0.9}), r"held_out_fraction 0.9 holds out all 2 samples, leaving none to fit on"),
    "no samples": (X_MODEL, lambda p: (ROWS[:0], {"held_out_fraction": 0}), r"no samples"),
    "empty iterable": (X_MODEL, lambda p: ([], {}), r"batches given in Python: no batches"),
    "batch not a dict": (X_MODEL, lambda p: ([ROWS], {}), r"calibration batch 0 is of type ndarray; each batch must be a dict"),
    "fraction 1": (X_MODEL, lambda p: (ROWS, {"held_out_fraction": 1.0}), r"held_out_fraction must be a number in \[0, 1\), got 1.0"),
    "fraction nan": (X_MODEL, lambda p: (ROWS, {"held_out_fraction": float("nan")}), r"held_out_fraction must be a number in \[0, 1\), got nan"),
    "batch size 0": (X_MODEL, lambda p: (ROWS, {"batch_size": 0}), r"batch_size must be an integer >= 1, got 0"),
    "max samples bool": (X_MODEL, lambda p: (ROWS, {"max_samples": True}), r"max_samples must be an integer >= 1, got True"),
    "empty folder": (X_MODEL, lambda p: (_folder(p, {}), {}), r"data: the folder holds no \.npz or \.npy files"),
    "mixed folder": (X_MODEL, lambda p: (_folder(p, {"a.npz": ROWS, "b.npy": ROWS}), {}), r"data: the folder mixes \.npz and \.npy files"),
    "only labels": (X_MODEL, lambda p: (_folder(p, {"labels.npy": LABELS}), {}), r"the folder holds only labels\.npy, no input samples"),
    "missing path": (X_MODEL, lambda p: (p / "nope.npz", {}), r"nope\.npz: no such file or folder"),
    "unreadable npz": (
        X_MODEL,
        lambda p: (_folder(p, {"a.npz": ROWS, "b.npz": b"not a zip"}), {}),
        r"b\.npz: not a readable \.npz file \(not in numpy's format",
    ),
    "unreadable npy": (X_MODEL, lambda p: (_folder(p, {"a.npy": b"garbage"}), {}), r"a\.npy: not a readable \.npy file \(not in numpy's format"),
    "truncated npz": (X_MODEL, lambda p: (_truncated(_write(p, "d.npz", x=ROWS)), {}), r"d\.npz: not a readable \.npz file \(.+\)"),
    "ragged list": (X_MODEL, lambda p: ({"x": [[1.0], [1.0, 2.0]]}, {}), r"the calibration dict: 'x' is not an array \(.+\)"),
    "npy holding an npz": (X_MODEL, lambda p: (_write(p, "d.npz", x=ROWS).rename(p / "d.npy"), {}), r"d\.npy: not a \.npy array"),
    "npz holding an npy": (X_MODEL, lambda p: (_renamed(p / "d.npy", ROWS, p / "d.npz"), {}), r"d\.npz: not an \.npz archive"),
    "files disagree on a symbolic dim": (
        {"x": ["N", 2, "W"]},
        lambda p: (_folder(p, {"a.npz": ROWS, "b.npz": np.zeros((4, 2, 5), np.float32)}), {}),
        r"b\.npz: 'x' has samples of shape \[2, 5\], but .*a\.npz has \[2, 3\]; joined data needs one shape per input",
    ),
    "labels in some files": (
        X_MODEL,
        lambda p: (_write(p, "a.npz", x=ROWS, labels=LABELS) and _write(p, "b.npz", x=ROWS) and p, {}),
        r"b\.npz: no 'labels' array, but .*a\.npz has one; give labels in every file or batch, or in none",
    ),
    "npz labels count": (X_MODEL, lambda p: (_write(p, "d.npz", x=ROWS, labels=LABELS[:9]), {}), r"d\.npz: 'labels' has 9 entries for 10 samples"),
    "labels argument count": (X_MODEL, lambda p: (ROWS, {"labels": LABELS[:9]}), r"the labels array: 9 labels for 10 samples"),
    "labels.npy count": (X_MODEL, lambda p: (_folder(p, {"x.npy": ROWS, "labels.npy": LABELS[:3]}), {}), r"labels\.npy: 3 labels for 10 samples"),
    "labels npz without labels": (X_MODEL, lambda p: (ROWS, {"labels": _write(p, "l.npz", y=LABELS)}), r"l\.npz: no 'labels' array \(keys: y\)"),
    "labels file missing": (X_MODEL, lambda p: (ROWS, {"labels": p / "l.npy"}), r"l\.npy: no such labels file"),
    "scalar labels": (X_MODEL, lambda p: (ROWS, {"labels": 3}), r"the labels array is a single value; labels need one entry per sample"),
    "folder npy for two inputs": (TWO_INPUTS, lambda p: (_folder(p, {"x.npy": ROWS, "part1.npy": ROWS}), {}), r"part1\.npy: 'part1' is not an input"),
    "static batch larger than a part": (
        {"x": [4, 2, 3]},
        lambda p: (ROWS[:6], {}),
        r"arrays given in Python: the held-out part has 2 samples, fewer than the 4 of one batch the model takes",
    ),
    "not data": (X_MODEL, lambda p: (3.5, {}), r"calibration data must be a path, an array, a dict of arrays or an iterable of such dicts, got float"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_one_line_input_errors_that_name_the_problem(case: str, tmp_path: Path) -> None:
    inputs, build, message = REFUSALS[case]
    data, kwargs = build(tmp_path)
    with pytest.raises(InputError, match=message) as caught:
        load_calibration(data, _model(inputs), **kwargs)
    assert "\n" not in str(caught.value)


def test_timing_takes_the_first_sample_unless_the_asked_shape_differs() -> None:
    """Latency is measured on a real sample, but never at another shape than ``--input-shape`` asks for."""
    model = irx.load(MODELS_DIR / "digits_cnn.onnx")
    calibration = load_calibration(str(MODELS_DIR / "digits_calibration.npz"), model)
    feeds = calibration.timing_feeds(model)
    assert feeds is not None and list(feeds) == ["input"]
    np.testing.assert_array_equal(feeds["input"], calibration.fit[0]["input"][:1])
    assert calibration.timing_feeds(model, {"input": (1, 1, 8, 8)}) is not None
    assert calibration.timing_feeds(model, {"input": (4, 1, 8, 8)}) is None
