"""devlab's standalone OpenVINO runner: one ONNX model, one device, timed inferences, JSON out.

devlab runs this file in a subprocess under a configurable interpreter, so it must stay
self-contained: Python 3.6+ syntax, only the standard library, numpy and openvino. It drives
both OpenVINO APIs:

* the new one (``openvino.Core``, 2022.1+; ``openvino.runtime.Core`` in 2022.x), which drives
  CPU, GPU and NPU in current releases;
* the old one (``openvino.inference_engine.IECore``, 2021.4), the last pip wheels with the
  MYRIAD plugin (Intel Neural Compute Stick 2), on Python 3.6-3.9.

Usage::

    python runner.py --model M.onnx --device CPU --warmup W --runs N [--threads T]
                              [--min-seconds S] [--select SUBSTRING]

On success it prints one JSON object on stdout and exits 0: ``latencies_us`` (every timed
iteration), ``load_us`` (read + compile), ``read_us``, ``compile_us``, ``first_inference_us``,
``device`` (the device name compiled for), ``device_full_name``, ``openvino_version``,
``api`` (``core`` or ``iecore``), ``python``. On failure it prints ``{"error": ..., "stage":
...}`` and exits 2 (bad model, a device it cannot compile for, openvino not importable).
Anything OpenVINO itself writes to stdout is moved to stderr so stdout stays one JSON object.
"""

import argparse
import json
import os
import platform
import sys
import time

EXIT_ERROR = 2

_NUMPY_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "i16": "int16",
    "i8": "int8",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "boolean": "bool",
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "BOOL": "bool",
}


class RunnerError(Exception):
    def __init__(self, stage, message):
        Exception.__init__(self, message)
        self.stage = stage


def _random_input(np, shape, type_name, rng):
    dtype = np.dtype(_NUMPY_TYPES.get(type_name, "float32"))
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.integers(0, 10, size=shape).astype(dtype)


def _pick_device(requested, available, select):
    """``requested`` or, with ``select``, the available device of that kind naming it."""
    if not select:
        return requested
    for name in available:
        if name.split(".")[0] == requested and select in name:
            return name
    return requested


class CoreBackend:
    """OpenVINO 2022.1+ (``Core``)."""

    api = "core"

    def __init__(self, ov):
        self.ov = ov
        self.core = ov.Core()

    def version(self):
        getter = getattr(self.ov, "get_version", None)
        if getter is None:
            from openvino.runtime import get_version as getter
        return str(getter())

    def available(self):
        return list(self.core.available_devices)

    def full_name(self, device):
        try:
            return str(self.core.get_property(device, "FULL_DEVICE_NAME"))
        except Exception:
            return device

    def load(self, model_path, device, threads, np, rng):
        started = time.perf_counter()
        try:
            model = self.core.read_model(model_path)
        except Exception as error:
            raise RunnerError("read_model", f"cannot read the model: {error}") from error
        read = time.perf_counter()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and device.split(".")[0] == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            compiled = self.core.compile_model(model, device, config)
        except Exception as error:
            raise RunnerError(
                "compile_model", f"cannot compile the model for {device}: {error}"
            ) from error
        compiled_at = time.perf_counter()
        feeds = {}
        for port in compiled.inputs:
            shape = port.get_partial_shape()
            if shape.is_dynamic:
                raise RunnerError("inputs", f"input {port.any_name} has a dynamic shape {shape}")
            type_name = port.get_element_type().get_type_name()
            feeds[port.any_name] = _random_input(np, list(port.shape), type_name, rng)
        request = compiled.create_infer_request()

        def infer():
            request.infer(feeds)

        def outputs_for(given):
            request.infer(given)
            count = len(compiled.outputs)
            return [np.array(request.get_output_tensor(i).data) for i in range(count)]

        return infer, read - started, compiled_at - read, outputs_for


class IECoreBackend:
    """OpenVINO 2021.4 and older (``openvino.inference_engine.IECore``); has MYRIAD."""

    api = "iecore"

    def __init__(self, inference_engine):
        self.ie_module = inference_engine
        self.ie = inference_engine.IECore()

    def version(self):
        return str(self.ie_module.get_version())

    def available(self):
        return list(self.ie.available_devices)

    def full_name(self, device):
        try:
            return str(self.ie.get_metric(device, "FULL_DEVICE_NAME"))
        except Exception:
            return device

    def load(self, model_path, device, threads, np, rng):
        started = time.perf_counter()
        try:
            network = self.ie.read_network(model=model_path)
        except Exception as error:
            raise RunnerError("read_model", f"cannot read the model: {error}") from error
        read = time.perf_counter()
        config = {}
        if threads and device.split(".")[0] == "CPU":
            config["CPU_THREADS_NUM"] = str(int(threads))
        try:
            executable = self.ie.load_network(
                network=network, device_name=device, config=config, num_requests=1
            )
        except Exception as error:
            raise RunnerError(
                "compile_model", f"cannot compile the model for {device}: {error}"
            ) from error
        compiled_at = time.perf_counter()
        feeds = {}
        for name, info in network.input_info.items():
            desc = info.tensor_desc
            feeds[name] = _random_input(np, list(desc.dims), desc.precision, rng)

        def infer():
            executable.infer(inputs=feeds)

        def outputs_for(given):
            result = executable.infer(inputs=given)
            return [np.array(result[name]) for name in network.outputs]

        return infer, read - started, compiled_at - read, outputs_for


def _open_openvino():
    try:
        import openvino
    except Exception as error:
        raise RunnerError(
            "import", f"openvino is not importable under {sys.executable}: {error}"
        ) from error
    core = getattr(openvino, "Core", None)
    if core is None:
        try:
            from openvino import runtime

            core = getattr(runtime, "Core", None)
            if core is not None:
                return CoreBackend(runtime)
        except Exception:
            pass
    if core is not None:
        return CoreBackend(openvino)
    try:
        from openvino import inference_engine
    except Exception as error:
        raise RunnerError(
            "import", f"this openvino has neither Core nor IECore ({sys.executable}): {error}"
        ) from error
    return IECoreBackend(inference_engine)


def measure(args):
    try:
        import numpy as np
    except Exception as error:
        raise RunnerError(
            "import", f"numpy is not importable under {sys.executable}: {error}"
        ) from error
    if not os.path.isfile(args.model):
        raise RunnerError("read_model", f"no such model file: {args.model}")
    backend = _open_openvino()
    available = backend.available()
    device = _pick_device(args.device, available, args.select)
    rng = np.random.default_rng(0) if hasattr(np.random, "default_rng") else None
    if rng is None:  # numpy < 1.17 (old Python 3.6 environments)
        rng = _LegacyRng(np)
    infer, read_s, compile_s, outputs_for = backend.load(args.model, device, args.threads, np, rng)
    clock = time.perf_counter
    try:
        start = clock()
        infer()
        first_s = clock() - start
        for _ in range(max(args.warmup, 0)):
            infer()
        latencies = []
        deadline = clock() + args.min_seconds if args.min_seconds else None
        limit = args.runs if args.runs is not None else 1 << 62
        while len(latencies) < limit:
            start = clock()
            infer()
            end = clock()
            latencies.append((end - start) * 1e6)
            if deadline is not None and end >= deadline:
                break
        if args.parity_inputs:
            _write_parity_outputs(np, args, outputs_for)
    except RunnerError:
        raise
    except Exception as error:
        raise RunnerError("infer", f"inference failed on {device}: {error}") from error
    return {
        "latencies_us": latencies,
        "read_us": read_s * 1e6,
        "compile_us": compile_s * 1e6,
        "load_us": (read_s + compile_s) * 1e6,
        "first_inference_us": first_s * 1e6,
        "warmup": args.warmup,
        "device": device,
        "device_full_name": backend.full_name(device),
        "available_devices": available,
        "openvino_version": backend.version(),
        "api": backend.api,
        "python": platform.python_version(),
        "model": args.model,
    }


def _write_parity_outputs(np, args, outputs_for):
    """Run devlab's fixed parity input once and save the outputs, in the model's order."""
    with open(args.parity_inputs + ".names.json") as handle:
        names = json.load(handle)
    with np.load(args.parity_inputs) as data:
        given = {name: data[f"in_{index}"] for index, name in enumerate(names)}
    outputs = outputs_for(given)
    np.savez(args.parity_outputs, **{f"out_{i}": out for i, out in enumerate(outputs)})


class _LegacyRng:
    def __init__(self, np):
        self.state = np.random.RandomState(0)

    def standard_normal(self, shape):
        return self.state.standard_normal(shape)

    def integers(self, low, high, size):
        return self.state.randint(low, high, size=size)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Time one ONNX model on an OpenVINO device.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", required=True, help="MYRIAD, CPU, GPU, NPU, ...")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--min-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--select", default=None, help="pick the device whose name contains this")
    parser.add_argument("--parity-inputs", default=None, help="npz of the parity input")
    parser.add_argument("--parity-outputs", default=None, help="where to save the outputs (npz)")
    args = parser.parse_args(argv)
    if args.runs is None and args.min_seconds is None:
        args.runs = 100
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Keep stdout for the JSON alone: whatever OpenVINO's native code prints goes to stderr.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)
    code = 0
    try:
        payload = measure(args)
    except RunnerError as error:
        payload = {"error": str(error), "stage": error.stage, "device": args.device}
        code = EXIT_ERROR
    except Exception as error:  # an OpenVINO failure we did not anticipate: still JSON
        payload = {"error": f"{type(error).__name__}: {error}", "stage": "unknown"}
        code = EXIT_ERROR
    sys.stdout.flush()
    with os.fdopen(json_fd, "w") as out:
        out.write(json.dumps(payload) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
