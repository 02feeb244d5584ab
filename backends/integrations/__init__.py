"""Other tools driving a devlab lab: adapters that sit above the core, beside the cluster.

``nnmeter``: a backend nn-Meter's builder registers (``nn-meter register --backend``) to
profile its kernels on any device devlab sees. The core and the measurement code never import
this package (an import-linter contract in pyproject.toml).
"""
