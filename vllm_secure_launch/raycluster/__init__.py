"""`vllm-secure-launch ray start`: a Ray node started the hardened way (docs/ray.md).

plan.py is the pure planner; host.py reads the machine; start.py runs the plan (token, guard,
kernel firewall, supervisor)."""
