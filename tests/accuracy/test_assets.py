"""The shipped accuracy assets are what ``assets/make_accuracy.py`` makes: rebuilding them gives
the same sets byte for byte and a model of the same held-out top-1 (skipped without
scikit-learn, which only that script needs, to load the digits)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.accuracy.evaluate import evaluate, host_outputs
from backends.accuracy.sets import open_set
from backends.models.intake import load_model
from support.helpers import REPO_ROOT

ASSETS = REPO_ROOT / "assets" / "accuracy"


@pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed"
)
def test_rebuilding_the_assets_reproduces_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "assets" / "make_accuracy.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("digits-test", "digits-calib"):
        for file in ("inputs.npy", "labels.csv", "set.json"):
            assert (tmp_path / name / file).read_bytes() == (ASSETS / name / file).read_bytes()
    scores = []
    for model_path in (ASSETS / "digits.onnx", tmp_path / "digits.onnx"):
        report = evaluate(
            host_outputs(str(model_path)), load_model(model_path), open_set(ASSETS / "digits-test")
        )
        assert report is not None
        scores.append(report.top1)
    assert scores[0] == scores[1]
    rebuilt = np.load(tmp_path / "digits-test" / "inputs.npy")
    assert rebuilt.dtype == np.uint8 and rebuilt.shape == (360, 8, 8) and rebuilt.max() <= 16
