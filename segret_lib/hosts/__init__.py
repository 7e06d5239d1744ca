"""The hosts: the life cycle shared by WebUI-like hosts, the AUTOMATIC1111 and Forge adapters, the WebUI prompt parser.
Only this package imports the host (`modules`, Forge's `backend`)."""
