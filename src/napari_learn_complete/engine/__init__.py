"""Long-running work on an index: Learn, full training, Complete, propose/accept (no Qt/napari)."""
