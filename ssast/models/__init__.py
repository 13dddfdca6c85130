"""AST encoders and the SSAST pretraining and classification models, and `load_model` for every source."""

from ssast.models.ast import (
    SIZES,
    ASTClassifier,
    ASTEncoder,
    ModelConfig,
    SSASTModel,
    adapt_pos_embed,
    describe,
    grid_size,
    resized,
)
from ssast.models.formats import CheckpointError, export_official, model_state
from ssast.models.loading import Loaded, load_encoder, load_model

__all__ = [
    "SIZES",
    "ASTClassifier",
    "ASTEncoder",
    "CheckpointError",
    "Loaded",
    "ModelConfig",
    "SSASTModel",
    "adapt_pos_embed",
    "describe",
    "export_official",
    "grid_size",
    "load_encoder",
    "load_model",
    "model_state",
    "resized",
]
