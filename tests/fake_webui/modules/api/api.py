"""The alwayson_scripts part of the WebUI API's init_script_args."""


class HTTPException(Exception):
    def __init__(self, status_code, detail):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def get_script(script_name, script_runner):
    names = [s.title().lower() for s in script_runner.scripts]
    if script_name.lower() not in names:
        return None
    return script_runner.scripts[names.index(script_name.lower())]


def init_script_args(alwayson_scripts: dict, script_runner) -> list:
    script_args = script_runner.default_args()
    for name, payload in alwayson_scripts.items():
        script = get_script(name, script_runner)
        if script is None:
            raise HTTPException(422, f"always on script {name} not found")
        if not script.alwayson:
            raise HTTPException(422, "Cannot have a selectable script in the always on scripts params")
        if "args" in payload:
            for idx in range(0, min(script.args_to - script.args_from, len(payload["args"]))):
                script_args[script.args_from + idx] = payload["args"][idx]
    return script_args
