"""Quantization on the host: activation ranges from a calibration set, written as SNPE
encodings (MQBench's layout) or as an ONNX Runtime QDQ model."""
