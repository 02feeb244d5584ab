"""OpenVINO devices (CPU, GPU, Intel NCS): the backend, NCS discovery
and the out-of-process runner."""
