"""Launching one lmx run over several processes: locally, under SLURM, on Kubernetes."""
