"""The pretraining stage (``python -m pretrain``): masked spectrogram patch modeling on unlabelled audio."""
