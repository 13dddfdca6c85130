"""The fine-tuning stage and inference (``python -m finetune``): not implemented yet; the model side
(`ssast.models.ASTClassifier.from_pretrained` / `from_checkpoint`) is in place."""
