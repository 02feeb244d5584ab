"""Power monitors: the Monsoon driver, capture windows and traces on disk."""
