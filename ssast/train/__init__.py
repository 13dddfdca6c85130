"""Training: the engine (`engine`) and what it runs in (run folder, checkpoints, log, optimiser, processes), and the
two training tasks, masked patch pretraining (`pretraining`) and fine-tuning a classifier (`classification`,
`finetuning`)."""
