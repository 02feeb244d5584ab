"""Device backends: the contract (base), the registry of kinds, and one package per kind."""
