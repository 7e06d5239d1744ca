"""The accordion, the script's arguments and the X/Y/Z axes (gradio; no host import)."""
