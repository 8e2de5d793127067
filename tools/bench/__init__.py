"""`make bench`: what tagstream costs, measured on the local stack, side by side with two baselines.

`python -m tools.bench --help`; the README section "Benchmark" describes the method and the latest figures.
Modules: `config` (run sizes), `workload` (events, probes), `load` (paced producers), `probes` (latency
reader), `sampling` (lag, CPU/RSS, Flink checkpoints), `stats` (pure summaries), `systems` (tagstream, the
Flink SQL twin, the naive consumer), `runner` (the phases), `report` (JSON, plots, README).
"""
