"""Model intake (ONNX checks, inputs), MAC counting and conversion for device runtimes."""
