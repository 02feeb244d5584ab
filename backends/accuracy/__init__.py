"""Accuracy next to latency: evaluation sets on disk, and scoring a device's outputs on them."""
