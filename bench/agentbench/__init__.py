"""The parts of `bench/agent.py`, the shipping agent's benchmark (its docstring says what each part measures).

floor: the floor child (read, gzip, Content-MD5, put_object), stdlib and boto3 only; spools: the spools and their
config; children: running the agent and the floor as subprocesses; throughput (1); rss (2); latency (3);
witness (4); streaming (5); profile (--profile); report: the full run's table and JSON summary.

Like bench/agent.py itself, no module here imports auditlock or the test support at import time: the floor child
(bench/agent.py --floor-child) imports nothing but the stdlib and boto3, like a minimal shipper would.
"""
