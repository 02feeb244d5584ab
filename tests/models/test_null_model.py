"""The null model: same inputs and outputs as a real model, no work; its time is the call cost."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from backends.models.intake import load_model, random_inputs
from backends.models.null_model import null_model_bytes
from support.helpers import MODELS_DIR


def test_null_model_takes_the_inputs_and_gives_outputs_shaped_like_the_models() -> None:
    model = load_model(MODELS_DIR / "mnv2_cifar32.onnx")
    feeds = random_inputs(model)
    real = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    names = [output.name for output in real.get_outputs()]
    outputs = real.run(None, feeds)
    null = ort.InferenceSession(
        null_model_bytes(feeds, list(zip(names, outputs, strict=True))),
        providers=["CPUExecutionProvider"],
    )
    assert [i.name for i in null.get_inputs()] == list(feeds)
    got = null.run(None, feeds)
    assert [o.name for o in null.get_outputs()] == names
    for mine, theirs in zip(got, outputs, strict=True):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        assert not np.any(mine)
