"""A-STAR (attention segregation & retention) for the WebUI; the engine lives in segret_lib.

The WebUI re-executes this file on "Reload UI" after clearing every script callback, so the callbacks are
registered here, not in a segret_lib module (those stay cached in sys.modules).
"""

from modules import script_callbacks

from segret_lib.webui_adapter import SegretScript, add_xyz_axes  # noqa: F401  (the WebUI registers Script subclasses found here)

script_callbacks.on_before_ui(add_xyz_axes)
