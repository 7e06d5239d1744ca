"""A-STAR (attention segregation & retention) for the AUTOMATIC1111 WebUI and WebUI Forge; the engine lives
in segret_lib, the host (chosen at run time) in segret_lib.hosts.a1111 or .forge.

The WebUI re-executes this file on "Reload UI" after clearing every script callback, so the callbacks are
registered here, not in a segret_lib module (those stay cached in sys.modules).
"""

from modules import script_callbacks

from segret_lib.hosts.select import adapter

_host = adapter()
SegretScript = _host.SegretScript  # the WebUI registers the Script subclasses found in this module
add_xyz_axes = _host.add_xyz_axes

script_callbacks.on_before_ui(add_xyz_axes)
