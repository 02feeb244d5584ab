"""Build devlab's small real accuracy assets: ``python assets/make_accuracy.py [--out DIR]``.

Every accuracy and quantization path has to run offline, so devlab ships one small labelled
set and a classifier for it: the handwritten digits that ship inside scikit-learn (1,797 8x8
grey images, pixels 0..16; ``sklearn.datasets.load_digits``), split once with a fixed seed:

* ``digits-test/``: the held-out 20% (360 images), never used for training or calibration;
* ``digits-calib/``: 100 images of the training part, for quantization's activation ranges;
* ``digits.onnx``: a 64-64-10 MLP (Flatten, Gemm, Relu, Gemm) trained on the training part
  with plain full-batch gradient descent in numpy and written with ``onnx.helper``.

The sets keep the raw pixels (``inputs.npy``, uint8 [N, 8, 8]) and say how to feed them in
``set.json`` (divide by 16, float32): the recipe is part of the set, as for image sets.
scikit-learn is needed only here, to load the data; the files it writes are committed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9
SEED = 19  # issue 19; fixed forever so the split and the weights never change
TEST_COUNT = 360
CALIB_COUNT = 100
HIDDEN = 64
EPOCHS = 3000
LEARNING_RATE = 0.5
WEIGHT_DECAY = 1e-4
PIXEL_MAX = 16.0
DEFAULT_OUT = Path(__file__).resolve().parent / "accuracy"


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8], labels int64 [1797]) from scikit-learn's bundled copy."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("make_accuracy.py needs scikit-learn to load the digits: pip install scikit-learn")
    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def split(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (test, train, calibration): calibration is a subset of train, test apart."""
    order = np.random.default_rng(SEED).permutation(count)
    test, train = order[:TEST_COUNT], order[TEST_COUNT:]
    return np.sort(test), train, np.sort(train[:CALIB_COUNT])


def train_mlp(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """W1 [H, 64], b1 [H], W2 [10, H], b2 [10] by full-batch gradient descent on softmax
    cross-entropy (float64, then stored as float32)."""
    rng = np.random.default_rng(SEED)
    w1 = rng.standard_normal((HIDDEN, x.shape[1])) * np.sqrt(2.0 / x.shape[1])
    b1 = np.zeros(HIDDEN)
    w2 = rng.standard_normal((10, HIDDEN)) * np.sqrt(1.0 / HIDDEN)
    b2 = np.zeros(10)
    onehot = np.eye(10)[y]
    for _ in range(EPOCHS):
        hidden = np.maximum(x @ w1.T + b1, 0.0)
        logits = hidden @ w2.T + b2
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grad_logits = (probs - onehot) / len(x)
        grad_w2 = grad_logits.T @ hidden + WEIGHT_DECAY * w2
        grad_hidden = (grad_logits @ w2) * (hidden > 0)
        grad_w1 = grad_hidden.T @ x + WEIGHT_DECAY * w1
        w1 -= LEARNING_RATE * grad_w1
        b1 -= LEARNING_RATE * grad_hidden.sum(axis=0)
        w2 -= LEARNING_RATE * grad_w2
        b2 -= LEARNING_RATE * grad_logits.sum(axis=0)
    return [a.astype(np.float32) for a in (w1, b1, w2, b2)]


def predict(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = weights
    return (np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2).argmax(axis=1)


def mlp_model(weights: list[np.ndarray]) -> onnx.ModelProto:
    """image [1, 1, 8, 8] -> Flatten -> Gemm -> Relu -> Gemm -> logits [1, 10]."""
    w1, b1, w2, b2 = weights
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node(
            "Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1
        ),
    ]
    initializers = [
        numpy_helper.from_array(w1, "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        numpy_helper.from_array(w2, "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="devlab-assets"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_set(folder: Path, name: str, images: np.ndarray, labels: np.ndarray, note: str) -> None:
    """A labelled set: inputs.npy (stacked samples), labels.csv (one row each), set.json."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "inputs.npy", images, allow_pickle=False)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label"])
        writer.writerows([int(label)] for label in labels)
    recipe = {
        "name": name,
        "about": note,
        "preprocess": {"mean": 0.0, "std": PIXEL_MAX, "dtype": "float32"},
    }
    (folder / "set.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    images, labels = load_digits_arrays()
    test, train, calib = split(len(images))
    assert not set(test) & set(train) and set(calib) <= set(train)
    flat = images.reshape(len(images), -1).astype(np.float64) / PIXEL_MAX
    weights = train_mlp(flat[train], labels[train])
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp_model(weights), args.out / "digits.onnx")
    source = "scikit-learn's load_digits, split with seed 19 (assets/make_accuracy.py)"
    write_set(
        args.out / "digits-test",
        "digits-test",
        images[test],
        labels[test],
        f"held-out {TEST_COUNT} of {source}; never used for training or calibration",
    )
    write_set(
        args.out / "digits-calib",
        "digits-calib",
        images[calib],
        labels[calib],
        f"{CALIB_COUNT} training images of {source}, for quantization ranges",
    )
    train_acc = (predict(weights, flat[train]) == labels[train]).mean()
    test_acc = (predict(weights, flat[test]) == labels[test]).mean()
    print(f"digits.onnx: train top-1 {train_acc:.4f}, held-out top-1 {test_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
