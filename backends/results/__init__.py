"""Tables on disk (tidy results, nnabla-nas latency tables) and comparisons between runs."""
