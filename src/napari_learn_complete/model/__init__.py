"""Detection models: configuration, torchvision builders and weight versions (no Qt/napari).

Names are imported on first use: the configuration and the registry need no torch, so napari's
process reads them without loading the builders.
"""

from .._lazy import lazy_exports

_HOMES = {
    **dict.fromkeys(["backbone_parameters", "build_model", "freeze_backbone", "load_weights",
                     "save_weights"], ".build"),
    **dict.fromkeys(["Augment", "InferenceSettings", "LIGHT_BOX_HEAD", "LIGHT_KEYPOINT_HEAD",
                     "MODEL_CHOICES", "ModelChoice", "ModelConfig", "Suggested",
                     "TrainingSettings"],
                    ".config"),
    **dict.fromkeys(["ModelHandle", "ModelVersion", "active_model", "create_model",
                     "default_input_size", "models", "set_active_model"], ".registry"),
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
