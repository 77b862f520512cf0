"""The napari widgets of Learn & Complete: index panel, dialogs, review table, model panel.

Everything that imports Qt lives in this package; the core never imports it.
"""
