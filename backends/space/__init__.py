"""Search spaces, their module latency tables and the latency estimator (the nnabla-nas flow).

``spec`` reads a space file, ``blocks`` builds its ONNX graphs, ``modules`` enumerates the
unique modules a latency table needs, ``sample`` draws whole architectures, ``estimator`` fits
whole-model latency on the accumulated module latency, ``plots`` draws the checks. Nothing
here imports textual.
"""
