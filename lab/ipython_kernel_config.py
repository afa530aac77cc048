# The kernels `make lab` starts load sharplib.core.notebook at start-up (make points IPYTHONDIR at a profile
# holding this file, under build/): a cell run after a restart, before the cell it needs (even before
# the imports), then says in one line which cell to run instead of printing a NameError's traceback.
c = get_config()  # noqa: F821 (IPython's config loader defines it)
c.InteractiveShellApp.extensions = ["sharplib.core.notebook"]
