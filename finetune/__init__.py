"""The fine-tuning stage (``python -m finetune``) and tagging of audio files (``python -m finetune.predict``)."""
