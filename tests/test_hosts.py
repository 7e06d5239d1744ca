"""The host is chosen at run time: the A1111 adapter where Forge's packages are absent (the fake WebUI host)."""

from segret_lib.hosts import a1111 as webui_adapter
from segret_lib.hosts import lifecycle as script_lifecycle
from segret_lib.hosts import select as hosts


def test_a1111_host_without_forge_packages():
    assert hosts.is_forge() is False
    assert hosts.adapter() is webui_adapter
    assert issubclass(webui_adapter.SegretScript, script_lifecycle.ScriptLifecycle)
    assert webui_adapter.SegretScript.host.name == webui_adapter.HOST_NAME
