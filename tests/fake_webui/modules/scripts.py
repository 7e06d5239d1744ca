"""Script base class, script loading and the runner that calls AlwaysOn scripts in the WebUI's order."""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from collections import namedtuple

import gradio as gr

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []
errors: list[str] = []  # what errors.report would print


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    sorting_priority = 0
    controls = None

    def title(self):
        raise NotImplementedError

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass


def load_module(path):
    """Like script_loading.load_module: the module is named after the file (with its extension)."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scripts(paths, basedir, reload=False):
    """Load script files of an extension: its folder goes on sys.path first, as the WebUI does.

    reload: like "Reload UI", re-execute the files in place of their earlier entries (modules they import stay
    cached in sys.modules; the caller clears the callbacks first, as the WebUI does).
    """
    sys.path = [basedir, *sys.path]
    for path in paths:
        if reload:
            scripts_data[:] = [d for d in scripts_data if d.path != path]
        module = load_module(path)
        for obj in module.__dict__.values():
            if isinstance(obj, type) and issubclass(obj, Script):
                scripts_data.append(ScriptClassData(obj, path, basedir, module))


def report(message):
    errors.append(message + "\n" + traceback.format_exc())


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.alwayson_scripts = []
        self.selectable_scripts = []
        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []

    def initialize_scripts(self, is_img2img):
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def setup_ui(self):
        """Build every AlwaysOn script's UI (in a gr.Blocks) and record its arg positions."""
        with gr.Blocks() as self.blocks:
            for script in self.alwayson_scripts:
                script.args_from = len(self.inputs)
                controls = script.ui(script.is_img2img) or []
                script.controls = controls
                self.inputs.extend(controls)
                script.args_to = len(self.inputs)
                if script.infotext_fields is not None:
                    self.infotext_fields += script.infotext_fields
                if script.paste_field_names is not None:
                    self.paste_field_names += script.paste_field_names
        return self.inputs

    def default_args(self):
        return [0] + [getattr(c, "value", None) for c in self.inputs[1:]]

    def _each(self, method, p, *call_args, **kwargs):
        for script in self.alwayson_scripts:
            try:
                args = p.script_args[script.args_from:script.args_to]
                getattr(script, method)(p, *call_args, *args, **kwargs)
            except Exception:
                report(f"Error running {method}: {script.filename}")

    def process(self, p):
        self._each("process", p)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._each("before_hr", p)

    def postprocess_batch(self, p, images, **kwargs):
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._each("postprocess_batch_list", p, pp, **kwargs)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)

    def run(self, p, *args):
        return None
