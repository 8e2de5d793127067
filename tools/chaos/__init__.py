"""Fault-test harness: run the job suite clean and under faults, compare outputs and metrics; hostile inputs.

Modules: suite (which jobs, topics, output readers), runner (one run on the local stack), stores (a run's
own Redis database and DynamoDB tables, read back normalized), faults (what goes wrong), compare (pure
comparison), corpus (hostile records), scenarios (clean vs faulted), cli.
"""
