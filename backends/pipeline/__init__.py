"""Pipelines: one request becomes dependent stages per model (quantize -> bench fp32 and int8
-> accuracy fp32 and int8), run on this machine's Lab or on a cluster.

Host-only stages (quantize) need no device; device stages are ordinary Lab jobs, so their
results land in the usual store and tables. The cluster's way of running host-only stages
lives in ``backends.cluster.host_stages``; this package never imports Dask.
"""
