"""A-STAR (attention segregation & retention) for the WebUI; the engine lives in segret_lib."""

from segret_lib.webui_adapter import SegretScript  # noqa: F401  (the WebUI registers Script subclasses found here)
