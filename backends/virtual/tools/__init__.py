"""Host-runnable stand-ins for the device-side benchmark tools of the virtual phone.

Each module has a ``main(argv)`` and runs as ``python -m backends.virtual.tools.<module>``; the
virtual phone installs ``/system/bin`` wrappers with the real tools' names that exec them:

* ``onnxruntime_perf_test``: ONNX Runtime's perf test (options, output lines and units of the
  real tool, results on stdout).
* ``benchmark_model``: TensorFlow Lite's benchmark tool, newest output format (``INFO:`` lines on
  stderr, like the real tool); the virtual phone has no TFLite interpreter, so the ``--graph``
  file is read as an ONNX model.

Both really run the model with ONNX Runtime on the host CPU, with random inputs.
"""
