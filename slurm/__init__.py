"""SLURM launchers (``python -m slurm <stage> ...``, submitit): not implemented yet. A stage started by
``srun`` on one node already joins DDP from the SLURM environment (`ssast.distributed`)."""
