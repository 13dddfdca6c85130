"""What the tests share and no test module holds: stage runners and run presets (`stages`), the reference oracles
(`spec_reference`, `reference_step`, `golden`), recorded traces (`traces`), and the harnesses of the slow tests (a
real SLURM cluster, a headless browser, the DDP worker, system packages)."""
