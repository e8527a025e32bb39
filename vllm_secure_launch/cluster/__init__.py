"""Multi-node derivation: from a Slurm step's variables (or an explicit node list and rank)
to each node's vLLM options (ranks, head address, job-unique ports). Pure, except
`lookup.addresses`, which pipeline calls to resolve the head's name."""
