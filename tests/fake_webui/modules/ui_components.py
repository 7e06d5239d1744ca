import gradio as gr


class InputAccordion(gr.Checkbox):
    """A checkbox whose value is True while the accordion it creates is enabled (like the WebUI's)."""

    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{InputAccordion.global_index}"
        InputAccordion.global_index += 1
        label = kwargs.get("label", "Accordion")
        checkbox_args = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **checkbox_args)
        self.accordion = gr.Accordion(label=label, open=kwargs.get("open", False), elem_id=self.accordion_id,
                                      elem_classes=["input-accordion"])

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"  # rendered by gradio's frontend as the checkbox it is
