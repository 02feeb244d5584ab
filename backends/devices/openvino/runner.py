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
    python runner.py --model M.onnx --device CPU --serve [--threads T] [--select SUBSTRING]

On success it prints one JSON object on stdout and exits 0: ``latencies_us`` (every timed
iteration), ``load_us`` (read + compile), ``read_us``, ``compile_us``, ``first_inference_us``,
``device`` (the device name compiled for), ``device_full_name``, ``openvino_version``,
``api`` (``core`` or ``iecore``), ``python``. On failure it prints ``{"error": ..., "stage":
...}`` and exits 2 (bad model, a device it cannot compile for, openvino not importable).
Anything OpenVINO itself writes to stdout is moved to stderr so stdout stays one JSON object.

``--serve`` keeps the compiled model for many rounds, so devlab's rounds neither read nor
compile it again: the runner loads it, runs the first inference and prints one JSON line with
the same keys minus the latencies (or the error, exit 2). Then it answers one JSON line per
request line on stdin:

* ``{"op": "run", "warmup": W, "runs": N, "min_seconds": S}``: W untimed runs, then timed
  ones until both ``runs`` and ``min_seconds`` are reached (either may be null, at least one
  run) -> ``{"latencies_us": [...]}``;
* ``{"op": "parity", "inputs": "in.npz", "outputs": "out.npz"}``: runs the parity input once
  and saves the outputs -> ``{"ok": true}``;
* ``{"op": "exit"}`` or the end of stdin: exit 0.

A request that fails gets ``{"error": ..., "stage": ...}`` and the runner waits for the next.
"""

import argparse
import json
import os
import platform
import sys
import time

EXIT_ERROR = 2
DEFAULT_RUNS = 100  # timed runs when neither a count nor a time is given

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


class OpenModel:
    """The model read, compiled and run once on its device: where both modes start.

    The first inference runs here, timed on its own (``first_inference_us``), because it pays
    for lazy allocations that no later run does.
    """

    def __init__(self, args):
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
        infer, read_s, compile_s, outputs_for = backend.load(
            args.model, device, args.threads, np, rng
        )
        try:
            start = time.perf_counter()
            infer()
            first_s = time.perf_counter() - start
        except Exception as error:
            raise RunnerError("infer", f"inference failed on {device}: {error}") from error
        self.np = np
        self.device = device
        self.infer = infer
        self.outputs_for = outputs_for
        self.info = {
            "read_us": read_s * 1e6,
            "compile_us": compile_s * 1e6,
            "load_us": (read_s + compile_s) * 1e6,
            "first_inference_us": first_s * 1e6,
            "device": device,
            "device_full_name": backend.full_name(device),
            "available_devices": available,
            "openvino_version": backend.version(),
            "api": backend.api,
            "python": platform.python_version(),
            "model": args.model,
        }


def measure(args):
    opened = OpenModel(args)
    infer = opened.infer
    clock = time.perf_counter
    try:
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
            _write_parity_outputs(
                opened.np, args.parity_inputs, args.parity_outputs, opened.outputs_for
            )
    except RunnerError:
        raise
    except Exception as error:
        raise RunnerError("infer", f"inference failed on {opened.device}: {error}") from error
    payload = {"latencies_us": latencies, "warmup": args.warmup}
    payload.update(opened.info)
    return payload


def timed_runs(infer, warmup, runs, min_seconds):
    """``warmup`` untimed runs, then timed ones until ``runs`` and ``min_seconds`` are both
    reached (lower bounds, so a round sized by time still has its runs; at least one)."""
    clock = time.perf_counter
    for _ in range(max(warmup, 0)):
        infer()
    if runs is None and not min_seconds:
        runs = DEFAULT_RUNS
    wanted = max(runs or 0, 1)
    latencies = []
    deadline = clock() + min_seconds if min_seconds else None
    while True:
        start = clock()
        infer()
        end = clock()
        latencies.append((end - start) * 1e6)
        if len(latencies) >= wanted and (deadline is None or end >= deadline):
            return latencies


def _write_parity_outputs(np, inputs_path, outputs_path, outputs_for):
    """Run devlab's fixed parity input once and save the outputs, in the model's order."""
    with open(inputs_path + ".names.json") as handle:
        names = json.load(handle)
    with np.load(inputs_path) as data:
        given = {name: data[f"in_{index}"] for index, name in enumerate(names)}
    outputs = outputs_for(given)
    np.savez(outputs_path, **{f"out_{i}": out for i, out in enumerate(outputs)})


def _error_payload(error, device=None):
    """A failure as the JSON devlab reads: the message and the stage it happened in."""
    if isinstance(error, RunnerError):
        payload = {"error": str(error), "stage": error.stage}
    else:  # an OpenVINO failure we did not anticipate: still JSON
        payload = {"error": f"{type(error).__name__}: {error}", "stage": "unknown"}
    if device is not None:
        payload["device"] = device
    return payload


def _number(request, key, kind):
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunnerError("request", f"{key} must be a number or null, not {value!r}")
    return kind(value)


def _answer(opened, request):
    """The reply to one request line (already parsed) of ``--serve``."""
    if not isinstance(request, dict):
        raise RunnerError("request", f"a request is a JSON object, not {request!r}")
    op = request.get("op")
    if op == "run":
        warmup = _number(request, "warmup", int) or 0
        runs = _number(request, "runs", int)
        min_seconds = _number(request, "min_seconds", float)
        try:
            return {"latencies_us": timed_runs(opened.infer, warmup, runs, min_seconds)}
        except Exception as error:
            raise RunnerError("infer", f"inference failed on {opened.device}: {error}") from error
    if op == "parity":
        inputs, outputs = request.get("inputs"), request.get("outputs")
        if not inputs or not outputs:
            raise RunnerError("request", "parity needs the inputs and outputs file names")
        try:
            _write_parity_outputs(opened.np, str(inputs), str(outputs), opened.outputs_for)
        except Exception as error:
            raise RunnerError("parity", f"parity run failed on {opened.device}: {error}") from error
        return {"ok": True}
    raise RunnerError("request", f"unknown op {op!r} (run, parity, exit)")


def serve(args, out):
    """``--serve``: load once, then answer requests from stdin until exit or end of input."""

    def reply(payload):
        out.write(json.dumps(payload) + "\n")
        out.flush()

    try:
        opened = OpenModel(args)
    except Exception as error:
        reply(_error_payload(error, args.device))
        return EXIT_ERROR
    reply(opened.info)
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as error:
            reply({"error": f"not a JSON request: {error}", "stage": "request"})
            continue
        if isinstance(request, dict) and request.get("op") == "exit":
            return 0
        try:
            payload = _answer(opened, request)
        except Exception as error:
            payload = _error_payload(error)
        reply(payload)


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
    parser.add_argument(
        "--serve", action="store_true", help="keep the model loaded, answer JSON lines on stdin"
    )
    args = parser.parse_args(argv)
    if args.runs is None and args.min_seconds is None:
        args.runs = DEFAULT_RUNS
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Keep stdout for the JSON alone: whatever OpenVINO's native code prints goes to stderr.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)
    if args.serve:
        try:
            with os.fdopen(json_fd, "w") as out:
                return serve(args, out)
        except BrokenPipeError:  # devlab went away mid-reply: nobody is left to answer
            return 0
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
