"""How numbers become trustworthy: statistics, the precision gate, canaries, output
parity, probes."""
