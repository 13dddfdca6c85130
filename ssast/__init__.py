"""Self-supervised Audio Spectrogram Transformers: the library behind the pretrain, finetune, probes and slurm
stages."""
