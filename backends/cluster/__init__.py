"""Scale-out: lab hosts on a Dask ``distributed`` cluster.

``devlab scheduler`` runs a Dask scheduler with devlab's dispatcher beside it (the store, the
record of truth, lives there); ``devlab worker`` on each lab host advertises its devices as
Dask resources and runs jobs with the same device code as the single-machine Lab; a console
opened with ``--cluster`` is a :class:`backends.cluster.client.ClusterLab`.

Dask comes with the ``cluster`` extra: without it, importing this package says so (MissingExtra)
instead of failing deep inside one of its modules.
"""

from backends.core.extras import ensure

ensure("distributed", "cluster", "Cluster commands (devlab scheduler, devlab worker, --cluster)")
