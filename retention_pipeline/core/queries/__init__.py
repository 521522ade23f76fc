"""Named statement builders, one per query, by subject. Every cutoff arrives as a bound, timezone-aware
parameter.

- expiring.py: which rows expire (the rules and the keep rule), their id spans and counts
- purge_batch.py: the statements of one purge batch, built once per run with bound parameters
- queue.py: the durable file queue
- partition_drop.py: clearing the way for dropping a partition (its files queued, its children removed)
- path_checks.py: which paths rows still reference (the reference check), and path listings
"""
