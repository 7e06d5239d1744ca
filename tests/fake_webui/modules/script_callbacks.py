"""Callback registry (only the callbacks the extension uses)."""

_before_ui = []


def on_before_ui(callback):
    _before_ui.append(callback)


def before_ui_callback():
    for cb in list(_before_ui):
        cb()


def clear():
    _before_ui.clear()
