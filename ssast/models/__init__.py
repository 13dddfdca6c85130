"""AST encoders and the SSAST pretraining and classification models."""

from ssast.models.ast import (SIZES, ASTClassifier, ASTEncoder, ModelConfig, SSASTModel, adapt_pos_embed,
                              grid_size)
from ssast.models.checkpoint import CheckpointError, export_official, load_encoder, model_state

__all__ = ["SIZES", "ASTClassifier", "ASTEncoder", "CheckpointError", "ModelConfig", "SSASTModel",
           "adapt_pos_embed", "export_official", "grid_size", "load_encoder", "model_state"]
