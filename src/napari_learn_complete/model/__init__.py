"""Detection models: configuration, torchvision builders and weight versions (no Qt/napari)."""

from .build import (
    apply_inference,
    backbone_parameters,
    build_model,
    extend_classes,
    freeze_backbone,
    load_weights,
    save_weights,
)
from .config import Augment, InferenceSettings, ModelConfig, TrainingSettings
from .registry import (
    ModelHandle,
    ModelVersion,
    active_model,
    create_model,
    default_input_size,
    models,
    set_active_model,
)

__all__ = [
    "Augment", "InferenceSettings", "ModelConfig", "ModelHandle", "ModelVersion",
    "TrainingSettings", "active_model", "apply_inference", "backbone_parameters", "build_model",
    "create_model", "default_input_size", "extend_classes", "freeze_backbone", "load_weights",
    "models", "save_weights", "set_active_model",
]
