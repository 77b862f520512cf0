"""Detection models: configuration, torchvision builders and weight versions (no Qt/napari)."""
