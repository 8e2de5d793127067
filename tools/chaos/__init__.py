"""Fault-test harness: run the job suite clean and under faults, compare outputs and metrics; hostile inputs.

Modules: suite (which jobs, topics, output readers), runner (one run on the local stack), faults (what
goes wrong), compare (pure comparison), corpus (hostile records), scenarios (clean vs faulted), cli.
"""
