"""Prompt conditioning structures and the functions samplers use: AND with weights, and prompt editing
(`[a:b:N]`, `[a:N]`, `[a::N]`) and alternation (`[a|b]`) without nesting; the WebUI parses nested ones too."""

from __future__ import annotations

import re
from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


re_edit = re.compile(r"\[([^\[\]:|]*)(?::([^\[\]:|]*))?:\s*([-+]?\d*\.?\d+)\s*\]")
re_alternate = re.compile(r"\[([^\[\]:]*\|[^\[\]:]*)\]")


def _edit_step(number: str, steps: int) -> int:
    value = float(number)
    return min(steps, int(value * steps if "." in number else value))


def _prompt_at(prompt: str, step: int, steps: int) -> str:
    def edit(match):
        before, after = (match.group(1), match.group(2)) if match.group(2) is not None else ("", match.group(1))
        return before if step <= _edit_step(match.group(3), steps) else after

    def alternate(match):
        options = match.group(1).split("|")
        return options[(step - 1) % len(options)]

    return re_alternate.sub(alternate, re_edit.sub(edit, prompt))


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """[[end_at_step, text], ...] per prompt, like the WebUI's (first pass semantics: numbers with a '.' are
    fractions of the steps, integers are steps; alternation switches every step)."""
    steps = hires_steps or base_steps
    res = []
    for prompt in prompts:
        ends = {steps} | {_edit_step(edit.group(3), steps) for edit in re_edit.finditer(prompt)}
        if re_alternate.search(prompt):
            ends |= set(range(1, steps + 1))
        res.append([[end, _prompt_at(prompt, end, steps)] for end in sorted(e for e in ends if e >= 1)])
    return res


def get_multicond_prompt_list(prompts):
    res_indexes, prompt_indexes, prompt_flat_list = [], {}, []
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            text, weight = re_weight.search(subprompt).groups()
            weight = float(weight) if weight is not None else 1.0
            index = prompt_indexes.get(text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res = []
    for schedule in get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling):
        entries = []
        for end_at_step, text in schedule:
            cond = model.get_learned_conditioning([text])
            cond = DictWithShape({k: v[0] for k, v in cond.items()}) if isinstance(cond, dict) else cond[0]
            entries.append(ScheduledPromptConditioning(end_at_step, cond))
        res.append(entries)
    return res


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    res = [[ComposableScheduledPromptConditioning(learned[i], w) for i, w in indexes] for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


def _at_step(schedules, current_step):
    """The entry for current_step; the first one if the step is past every entry, as the WebUI does."""
    for entry in schedules:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedules[0].cond


def _stack(conds):
    if isinstance(conds[0], dict):
        return DictWithShape({k: torch.stack([c[k] for c in conds]) for k in conds[0]})
    n = max(c.shape[0] for c in conds)
    padded = [torch.cat([c, c[-1:].repeat(n - c.shape[0], 1)]) if c.shape[0] < n else c for c in conds]
    return torch.stack(padded)


def reconstruct_cond_batch(c, current_step):
    return _stack([_at_step(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    conds, conds_list = [], []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable in composable_prompts:
            conds_for_batch.append((len(conds), composable.weight))
            conds.append(_at_step(composable.schedules, current_step))
        conds_list.append(conds_for_batch)
    return conds_list, _stack(conds)
