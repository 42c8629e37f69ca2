"""Benchmarks and drills: throughput and latency against a floor, chaos, failover, fairness.

Each module runs as `python -m bench.<name>` and prints a JSON report; the tests run short forms.
"""
