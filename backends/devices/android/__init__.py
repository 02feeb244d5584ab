"""Android phones over adb: plumbing, properties, sessions for TFLite, ONNX Runtime and SNPE."""
