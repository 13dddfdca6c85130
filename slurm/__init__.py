"""SLURM launchers (``python -m slurm <stage> ...``): submitit jobs with one task per GPU, requeued on preemption."""
