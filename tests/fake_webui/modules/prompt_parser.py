"""Prompt conditioning structures and the functions samplers use (AND / weights; no prompt editing)."""

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


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    steps = hires_steps or base_steps
    return [[[steps, prompt]] for prompt in prompts]


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


def get_learned_conditioning(model, prompts, steps, hires_steps=None):
    res = []
    for prompt in prompts:
        cond = model.get_learned_conditioning([prompt])
        cond = DictWithShape({k: v[0] for k, v in cond.items()}) if isinstance(cond, dict) else cond[0]
        res.append([ScheduledPromptConditioning(steps, cond)])
    return res


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None):
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps)
    res = [[ComposableScheduledPromptConditioning(learned[i], w) for i, w in indexes] for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


def _at_step(schedules, current_step):
    for entry in schedules:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedules[-1].cond


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
