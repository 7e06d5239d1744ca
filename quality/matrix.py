"""The benchmark matrix: concept count x sampler x step count on one prompt-set family, every variant paired
with plain on the same prompts and seeds, judged per cell at the seed level.

    python -m quality.matrix --family report --counts 2,3,4,3n --samplers euler,euler_a,dpmpp_2m_k,ddim \\
        --steps 10,25,50 --seeds 32 --per-seed 3 --variants plain,astar,astar_v1,aae,both --jobs 2 \\
        --out quality/results/matrix_report

Prompt files: quality/prompts/<family><count>.txt (count "3n": three objects whose concepts are the shape nouns
only; count 2 reads <family>.txt). Seeds: each family has its own range (FAMILY_SEEDS), so tuning and report
runs share no seed. With --per-seed k every seed gets k prompts, rotating through the file, so all prompts are
used and the unit of the test, the seed, is as many as possible for the time; --per-seed 0 gives every seed
every prompt (a crossed design, which also reports how much of the variance is seed, prompt and method).

Per cell and variant: all colours, all objects (colour and shape right), colour binding, fixed/broken image
pairs, the seed-level test (per-seed mean difference over its prompts; seeds up/down, exact Wilcoxon p), stray
pixels, grain (detector.grain; a cell's artefact criterion) and s/image. Results are cached per job in --out, so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from segret_lib.engine.step_rule import RULES, StepRule, register
from segret_lib.settings.params import (
    ASTAR_BIND_WEIGHT,
    ASTAR_STEP_SIZE,
    BOTH_EXCITE_WEIGHT,
    DEFAULT_RULE,
    LEGACY_EXCITE_WEIGHT,
    canonical_method,
)

from .evaluate import NOISES, SAMPLERS, Record, grain_text, has_grain, read_prompts
from .evaluate import VARIANTS as EVALUATE_VARIANTS
from .stats import keyed, seed_test, sign_test_p, variance_shares

PROMPTS = Path(__file__).resolve().parent / "prompts"
FAMILY_SEEDS = {"tune": 1000, "report": 0, "heldout": 5000, "tuneh": 2000}
VARIANTS: dict[str, dict | None] = {k: EVALUATE_VARIANTS[k]
                                    for k in ("plain", "astar", "astar_steady", "astar_v1", "aae", "both",
                                              "astar_bind", "both_quarter", "both_one")}
CRITERIA = ("colours fixed >= broken", "objects broken - fixed <= 2% of n or seed p > 0.2",
            "stray <= plain x 1.1", "grain <= plain x 1.1")
"""A cell passes on colours, objects and grain (cells_passing); cells_passing_stray counts it with the issue's
stray criterion instead of grain. Stray pixels count object outlines as well as noise, so they rise with the
number of objects drawn (detector.grain, quality/README.md "Stray pixels count outlines")."""
PASS_WITH_GRAIN, PASS_WITH_STRAY = (CRITERIA[0], CRITERIA[1], CRITERIA[3]), CRITERIA[:3]
METRICS_VERSION = 2  # in each job's key: version 2 records carry grain, so older cached jobs are not reused


def outcome_metrics(records: Sequence[Record]) -> list[tuple[str, Callable[[Record], float]]]:
    """The outcomes tested over seeds and split into variance shares: colours, objects, stray, and grain when
    every one of `records` carries it."""
    metrics: list[tuple[str, Callable[[Record], float]]] = [
        ("colours", lambda r: r.colours_present), ("objects", lambda r: r.all_present), ("stray", lambda r: r.stray)]
    if has_grain(records):
        metrics.append(("grain", lambda r: r.grain))
    return metrics


def uses_default_rule(changes: dict | None) -> bool:
    """Whether a variant runs with the default step rule (A-STAR or Both without an explicit rule)."""
    return (changes is not None and "step_rule" not in changes
            and canonical_method(changes.get("method", "astar")) != "aae")


def defaults_in_key(changes: dict | None) -> dict:
    """The defaults a variant runs with that its job key must follow, so that a cached job is not reused once one
    of them changes: the default step rule (and step size), binding's default weight once it is not 0, and Both's
    excite weight once it is not 1. Empty for the defaults the earliest cached jobs were made with."""
    out: dict = {}
    if uses_default_rule(changes):
        out["default_rule"] = {**asdict(RULES[DEFAULT_RULE]), "step_size": ASTAR_STEP_SIZE}
        if ASTAR_BIND_WEIGHT and "bind_weight" not in changes:
            out["default_bind_weight"] = ASTAR_BIND_WEIGHT
    if (changes is not None and canonical_method(changes.get("method", "astar")) == "both"
            and "excite_weight" not in changes and BOTH_EXCITE_WEIGHT != LEGACY_EXCITE_WEIGHT):
        out["default_excite_weight"] = BOTH_EXCITE_WEIGHT
    return out


def prompt_file(family: str, count: str) -> Path:
    return PROMPTS / (f"{family}.txt" if count == "2" else f"{family}{count}.txt")


def jobs_for(specs: Sequence, seeds: Sequence[int], per_seed: int) -> list[tuple[int, int]]:
    """(prompt index, seed) pairs: every prompt per seed (per_seed 0), or per_seed prompts per seed, rotating."""
    if per_seed <= 0 or per_seed >= len(specs):
        return [(i, s) for s in seeds for i in range(len(specs))]
    return [((k * per_seed + j) % len(specs), s) for k, s in enumerate(seeds) for j in range(per_seed)]


def _run_job(job: dict) -> dict:
    """One (cell, variant) in a worker: sample, judge, return the records (as dicts) and s/image."""
    import torch

    from .evaluate import Engine, PromptSpec, run_pairs
    from .model import load

    torch.set_num_threads(1)
    for name, fields in job["rules"].items():
        register(StepRule(**{**fields, "name": name}))
    noise = job.get("noise", "raw")  # jobs cached before the noise fix have no key: raw noise
    engine = _ENGINE.get(noise) or Engine(load(), noise=noise)
    _ENGINE[noise] = engine
    specs = [PromptSpec(p, tuple(c), tuple(tuple(o) for o in objs)) for p, c, objs in job["specs"]]
    records, spi = run_pairs(engine, specs, job["pairs"], job["sampler"], job["steps"], job["cfg"],
                             job["changes"], job["batch"])
    return {"records": [asdict(r) for r in records], "s_per_image": spi}


_ENGINE: dict = {}


def cell_summary(recs: Sequence[Record], plain: Sequence[Record], spi: float, plain_spi: float) -> dict:
    """One variant against plain in one cell: rates, pair counts, seed-level tests and the pass criteria."""
    n = len(recs)
    base = {(r.prompt, r.seed): r for r in plain}
    out: dict = {"n": n, "seeds": len({r.seed for r in recs}), "s_per_image": spi, "plain_s_per_image": plain_spi}
    for name, get in (("colours", lambda r: r.colours_present), ("objects", lambda r: r.all_present)):
        v, p = keyed(recs, get), keyed(plain, get)
        fixed = int(sum(bool(v[k]) and not p[k] for k in v))
        broken = int(sum(bool(p[k]) and not v[k] for k in v))
        out[name] = {"plain": float(np.mean(list(p.values()))), "value": float(np.mean(list(v.values()))),
                     "fixed": fixed, "broken": broken, "pair_sign_p": sign_test_p(fixed, broken),
                     "seed": seed_test(v, p)}
    bind = [r.binding_ok for r in recs if r.binding_ok is not None]
    bind_plain = [r.binding_ok for r in plain if r.binding_ok is not None]
    out["binding"] = {"plain": float(np.mean(bind_plain)) if bind_plain else None,
                      "value": float(np.mean(bind)) if bind else None, "n": len(bind), "plain_n": len(bind_plain)}
    stray, stray_plain = float(np.mean([r.stray for r in recs])), float(np.mean([base[k].stray for k in base]))
    out["stray"] = {"plain": stray_plain, "value": stray, "seed": seed_test(keyed(recs, lambda r: r.stray),
                                                                            keyed(plain, lambda r: r.stray))}
    with_grain = has_grain([*recs, *plain])
    if with_grain:
        g, g_plain = float(np.mean([r.grain for r in recs])), float(np.mean([r.grain for r in plain]))
        out["grain"] = {"plain": g_plain, "value": g, "seed": seed_test(keyed(recs, lambda r: r.grain),
                                                                        keyed(plain, lambda r: r.grain))}
    c, o = out["colours"], out["objects"]
    out["passes"] = {
        CRITERIA[0]: c["fixed"] >= c["broken"],
        CRITERIA[1]: (o["broken"] - o["fixed"] <= 0.02 * n) or o["seed"]["wilcoxon_p"] > 0.2,
        CRITERIA[2]: stray <= stray_plain * 1.1 + 1e-9,
    }
    if with_grain:
        out["passes"][CRITERIA[3]] = out["grain"]["value"] <= out["grain"]["plain"] * 1.1 + 1e-9
    return out


def passes(row: dict, criteria: Sequence[str] = PASS_WITH_GRAIN) -> bool:
    """Whether a cell's row meets these criteria; without grain (older records) the stray criterion stands in."""
    keys = [k for k in criteria if k in row["passes"]]
    if CRITERIA[3] in criteria and CRITERIA[3] not in row["passes"]:
        keys.append(CRITERIA[2])
    return all(row["passes"][k] for k in keys)


def pooled(cells: dict[str, dict[str, dict]], variant: str) -> dict:
    """A variant's totals over every cell of the matrix (pair counts summed; rates averaged over images)."""
    rows = [c[variant] for c in cells.values() if variant in c]
    n = sum(r["n"] for r in rows)
    out = {"cells": len(rows), "n": n, "cells_passing": sum(passes(r) for r in rows),
           "cells_passing_stray": sum(passes(r, PASS_WITH_STRAY) for r in rows)}
    for name in ("colours", "objects"):
        f, b = sum(r[name]["fixed"] for r in rows), sum(r[name]["broken"] for r in rows)
        out[name] = {"plain": sum(r[name]["plain"] * r["n"] for r in rows) / max(n, 1),
                     "value": sum(r[name]["value"] * r["n"] for r in rows) / max(n, 1), "fixed": f, "broken": b}
    out["stray"] = {k: sum(r["stray"][k] * r["n"] for r in rows) / max(n, 1) for k in ("plain", "value")}
    if rows and all("grain" in r for r in rows):
        out["grain"] = {k: sum(r["grain"][k] * r["n"] for r in rows) / max(n, 1) for k in ("plain", "value")}
    out["s_per_image"] = sum(r["s_per_image"] * r["n"] for r in rows) / max(n, 1)
    out["plain_s_per_image"] = sum(r["plain_s_per_image"] * r["n"] for r in rows) / max(n, 1)
    return out


def pooled_seed_tests(raw: dict[str, dict[str, tuple[list[Record], float]]], variant: str,
                      base: str = "plain") -> dict:
    """The seed-level test over the whole matrix: each seed's mean difference over all its images in every cell
    (the seeds are the same in every cell, so a seed is one unit however many cells it appears in), against
    plain or another variant (base)."""
    out = {}
    compared = [r for by in raw.values() for key in (variant, base) if key in by for r in by[key][0]]
    for name, get in outcome_metrics(compared):
        v, p = {}, {}
        for cell, by_variant in raw.items():
            if variant not in by_variant or base not in by_variant:
                continue
            for (prompt, seed), value in keyed(by_variant[variant][0], get).items():
                v[(cell, prompt, seed)] = value
            for (prompt, seed), value in keyed(by_variant[base][0], get).items():
                p[(cell, prompt, seed)] = value
        # keyed's (prompt, seed) keys: fold the cell into the prompt so seed_test groups by seed alone
        out[name] = seed_test({(f"{k[0]}|{k[1]}", k[2]): x for k, x in v.items()},
                              {(f"{k[0]}|{k[1]}", k[2]): x for k, x in p.items()})
    return out


def compact_table(cells: dict[str, dict[str, dict]], variants: Sequence[str], pooled_rows: dict) -> str:
    """One row per cell, one column group per variant: all colours and all objects fixed/broken, stray and grain
    (plain first), and whether the cell passes on colours, objects and grain (✓) or which criteria fail (c, o, s
    for stray, g for grain; a cell marked ✓s passes with grain and fails the stray criterion)."""
    shown = [v for v in variants if v != "plain"]
    head = "| cell | plain colours / objects / stray / grain | " + " | ".join(
        f"{v}: colours f/b, objects f/b, stray, grain" for v in shown) + " |"
    out = [head, "|" + "---|" * (2 + len(shown))]
    for cell, by_variant in cells.items():
        first = next(iter(by_variant.values()))
        row = [cell, f"{first['colours']['plain']:.2f} / {first['objects']['plain']:.2f} / "
                     f"{first['stray']['plain']:.3f} / {_grain(first, 'plain')}"]
        for v in shown:
            r = by_variant.get(v)
            if r is None:
                row.append("")
                continue
            tags = dict(zip(CRITERIA, "cosg", strict=True))
            failed = [tags[k] for k, ok in r["passes"].items() if not ok]
            with_grain = CRITERIA[3] in r["passes"]
            main = "".join(t for t in failed if t != "s" or not with_grain)
            mark = ("✓" if not main else "✗" + main) + ("s" if with_grain and "s" in failed else "")
            row.append(f"{r['colours']['fixed']}/{r['colours']['broken']}, {r['objects']['fixed']}/"
                       f"{r['objects']['broken']}, {r['stray']['value']:.3f}, {_grain(r, 'value')} {mark}")
        out.append("| " + " | ".join(row) + " |")
    row = ["**pooled**", ""]
    for v in shown:
        r = pooled_rows[v]
        row.append(f"{r['colours']['fixed']}/{r['colours']['broken']}, {r['objects']['fixed']}/"
                   f"{r['objects']['broken']}, {r['stray']['value']:.3f}, {_grain(r, 'value')} "
                   f"({r['cells_passing']}/{r['cells']} ✓; {r['cells_passing_stray']}/{r['cells']} with stray)")
    out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def _grain(row: dict, key: str) -> str:
    """A cell's or a pooled row's grain ("plain" or "value") for a table."""
    return grain_text(row["grain"][key] if "grain" in row else None)


def versus_text(raw: dict[str, dict[str, tuple[list[Record], float]]], variant: str, base: str) -> str:
    """One variant against another (not plain), pooled over the matrix and per concept count: rates, image
    pairs fixed/broken, the seed-level test (seeds up/down, Wilcoxon p)."""
    out = [f"| {variant} vs {base} | n | all colours | all objects | stray | grain | seeds up/down (colours; "
           "objects; stray; grain), Wilcoxon p |", "|---|---|---|---|---|---|---|"]
    counts = sorted({cell.split(" objects")[0] for cell in raw}, key=lambda c: (len(c), c))
    for subset in ("all", *counts):
        sub = {c: r for c, r in raw.items() if subset == "all" or c.split(" objects")[0] == subset}
        pairs = [(a, b) for r in sub.values() if variant in r and base in r
                 for a, b in _paired(r[variant][0], r[base][0])]
        if not pairs:
            continue
        cols = []
        for get in (lambda r: r.colours_present, lambda r: r.all_present):
            fixed = sum(bool(get(a)) and not get(b) for a, b in pairs)
            broken = sum(bool(get(b)) and not get(a) for a, b in pairs)
            cols.append(f"{np.mean([get(b) for _, b in pairs]):.3f}->{np.mean([get(a) for a, _ in pairs]):.3f} "
                        f"({fixed}/{broken})")
        cols.append(f"{np.mean([b.stray for _, b in pairs]):.3f}->{np.mean([a.stray for a, _ in pairs]):.3f}")
        t = pooled_seed_tests(sub, variant, base)
        cols.append(f"{np.mean([b.grain for _, b in pairs]):.4f}->{np.mean([a.grain for a, _ in pairs]):.4f}"
                    if "grain" in t else "-")
        tests = _tests_text(t)
        label = "all cells" if subset == "all" else f"{subset} objects"
        out.append(f"| {label} | {len(pairs)} | {' | '.join(cols)} | {tests} |")
    return "\n".join(out)


def _tests_text(t: dict) -> str:
    return "; ".join(f"{t[k]['seeds_up']}/{t[k]['seeds_down']} p={t[k]['wilcoxon_p']:.2g}" if k in t else "-"
                     for k in ("colours", "objects", "stray", "grain"))


def _paired(recs: Sequence[Record], base: Sequence[Record]) -> list[tuple[Record, Record]]:
    by = {(r.prompt, r.seed): r for r in base}
    return [(r, by[(r.prompt, r.seed)]) for r in recs if (r.prompt, r.seed) in by]


def pooled_seed_text(pooled_rows: dict) -> str:
    """The whole matrix per variant, tested over seeds: mean difference per seed, seeds up/down, Wilcoxon p."""
    out = ["| variant | n | all colours | all objects | stray | grain | seeds up/down (colours; objects; stray; "
           "grain), Wilcoxon p | s/image plain, variant |", "|---|---|---|---|---|---|---|---|"]
    for v, r in pooled_rows.items():
        tests = _tests_text(r["seed"])
        g = f"{_grain(r, 'plain')}->{_grain(r, 'value')}" if "grain" in r else "-"
        out.append(f"| {v} | {r['n']} | {r['colours']['plain']:.3f}->{r['colours']['value']:.3f} "
                   f"({r['colours']['fixed']}/{r['colours']['broken']}) | {r['objects']['plain']:.3f}->"
                   f"{r['objects']['value']:.3f} ({r['objects']['fixed']}/{r['objects']['broken']}) | "
                   f"{r['stray']['plain']:.3f}->{r['stray']['value']:.3f} | {g} | {tests} | "
                   f"{r['plain_s_per_image']:.3f}, {r['s_per_image']:.3f} |")
    return "\n".join(out)


def _fmt_metric(m: dict) -> str:
    s = m["seed"]
    return (f"{m['plain']:.3f}->{m['value']:.3f} ({m['fixed']}/{m['broken']}; seeds {s['seeds_up']}/"
            f"{s['seeds_down']}, p={s['wilcoxon_p']:.2g})")


def format_tables(cells: dict[str, dict[str, dict]], variants: Sequence[str]) -> str:
    """One markdown table per variant: a row per cell, then the pooled row."""
    out = []
    for v in variants:
        if v == "plain":
            continue
        out.append(f"\n#### {v}\n")
        out.append(f"| cell | n (seeds x prompts) | all colours plain->{v} (fixed/broken; seeds up/down, p) "
                   f"| all objects plain->{v} (fixed/broken; seeds up/down, p) | colour binding | stray px | grain "
                   f"| s/image plain, {v} | passes |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for cell, by_variant in cells.items():
            r = by_variant.get(v)
            if r is None:
                continue
            b = r["binding"]
            bind = (f"{b['plain']:.3f}->{b['value']:.3f}" if b["plain"] is not None and b["value"] is not None
                    else "-")
            ok = passes(r)
            fails = [] if ok else [k for k, good in r["passes"].items() if not good]
            note = " (stray above plain + 10 %)" if ok and not r["passes"][CRITERIA[2]] else ""
            out.append(f"| {cell} | {r['n']} ({r['seeds']} x {r['n'] // max(r['seeds'], 1)}) "
                       f"| {_fmt_metric(r['colours'])} | {_fmt_metric(r['objects'])} | {bind} "
                       f"| {r['stray']['plain']:.3f}->{r['stray']['value']:.3f} "
                       f"| {_grain(r, 'plain')}->{_grain(r, 'value')} "
                       f"| {r['plain_s_per_image']:.3f}, {r['s_per_image']:.3f} "
                       f"| {('yes' + note) if not fails else 'no: ' + '; '.join(fails)} |")
        p = pooled(cells, v)
        c, o = p["colours"], p["objects"]
        out.append(f"| **pooled** | {p['n']} | {c['plain']:.3f}->{c['value']:.3f} ({c['fixed']}/{c['broken']}) "
                   f"| {o['plain']:.3f}->{o['value']:.3f} ({o['fixed']}/{o['broken']}) | | "
                   f"{p['stray']['plain']:.3f}->{p['stray']['value']:.3f} | {_grain(p, 'plain')}->{_grain(p, 'value')} "
                   f"| {p['plain_s_per_image']:.3f}, {p['s_per_image']:.3f} "
                   f"| {p['cells_passing']}/{p['cells']} cells ({p['cells_passing_stray']} with stray) |")
    return "\n".join(out)


def parse_variant(text: str) -> tuple[str, dict | None]:
    """'name' (a known variant) or 'name:key=value;key=value' (settings on top of the defaults)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not rest:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {list(VARIANTS)} or NAME:key=value;...")
        return name, VARIANTS[name]
    return name, dict(kv.split("=", 1) for kv in rest.split(";") if kv.strip())


def parse_rule(text: str) -> tuple[str, dict]:
    """'name:normalise=1,budget=10,blur=0.5' -> a StepRule's fields (registered in the workers)."""
    name, _, rest = text.partition(":")
    fields: dict = {"name": name.strip()}
    for kv in rest.split(","):
        if kv.strip():
            k, v = kv.split("=", 1)
            fields[k.strip()] = {"normalise": lambda x: x.strip() in ("1", "true"), "budget": int,
                                 "blur": float, "power": float,
                                 "fade": float, "until": float,
                                 "keep_norm": lambda x: x.strip() in ("1", "true")}[k.strip()](v)
    return fields["name"], fields


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="report", help=f"prompt-set family: {list(FAMILY_SEEDS)}")
    ap.add_argument("--counts", default="3,4,3n")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--steps", default="10,25,50")
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--seed-offset", type=int, default=None, help="first seed (default: the family's)")
    ap.add_argument("--per-seed", type=int, default=3, help="prompts per seed, rotating (0 = all)")
    ap.add_argument("--variants", default="plain,astar,astar_v1,aae,both",
                    help="comma-separated names, or NAME:key=value;key=value for a setting variant")
    ap.add_argument("--rule", action="append", default=[], metavar="NAME:normalise=1,budget=10,blur=0.5",
                    help="register a step rule for the run (tuning)")
    ap.add_argument("--noise", default="unit", choices=NOISES,
                    help="start noise: unit RMS per image (default), or raw (the results before the noise fix)")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each")
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--versus", default="", metavar="VARIANT:BASE",
                    help="also test VARIANT against BASE (e.g. astar_bind:astar) at the seed level")
    args = ap.parse_args(argv)
    rules = dict(parse_rule(r) for r in args.rule)
    variants = dict(parse_variant(v) for v in args.variants.split(",") if v.strip())
    variants = {"plain": None, **variants}
    offset = FAMILY_SEEDS.get(args.family, 0) if args.seed_offset is None else args.seed_offset
    seeds = list(range(offset, offset + args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    todo, cell_keys = [], []
    for count in [c.strip() for c in args.counts.split(",") if c.strip()]:
        specs = read_prompts(prompt_file(args.family, count))
        pairs = jobs_for(specs, seeds, args.per_seed)
        plain_specs = [[s.prompt, list(s.concepts), [list(o) for o in s.objects]] for s in specs]
        for sampler in args.samplers.split(","):
            for steps in [int(s) for s in args.steps.split(",")]:
                cell = f"{count} objects, {sampler} {steps}"
                cell_keys.append(cell)
                for name, changes in variants.items():
                    job = {"specs": plain_specs, "pairs": [[i, s] for i, s in pairs], "sampler": sampler,
                           "steps": steps, "cfg": args.cfg, "changes": changes, "batch": args.batch,
                           "rules": {k: v for k, v in rules.items() if changes and changes.get("step_rule") == k}}
                    if args.noise != "raw":  # raw: the key of the jobs cached before the noise fix
                        job["noise"] = args.noise
                    job["metrics"] = METRICS_VERSION
                    job.update(defaults_in_key(changes))
                    digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:12]
                    todo.append((cell, name, args.out / f"job_{digest}.json", job))
    pending = [t for t in todo if not t[2].exists()]
    # the slowest first (A&E, many steps), so the two workers finish together
    pending.sort(key=lambda t: -(t[3]["steps"] * (3 if t[3]["changes"] and t[3]["changes"].get("method") == "aae"
                                                  else 1)))
    start = time.perf_counter()
    print(f"{len(todo)} jobs, {len(pending)} to run, {args.jobs} workers", flush=True)
    if pending:
        with mp.get_context("fork").Pool(args.jobs) as pool:
            results = pool.imap_unordered(_run_and_save, [(str(t[2]), t[3]) for t in pending])
            for k, path in enumerate(results, 1):
                print(f"  [{k}/{len(pending)}] {path} after {time.perf_counter() - start:.0f}s", flush=True)
    cells: dict[str, dict[str, dict]] = {}
    raw: dict[str, dict[str, tuple[list[Record], float]]] = {}
    for cell, name, path, _ in todo:
        data = json.loads(path.read_text())
        raw.setdefault(cell, {})[name] = ([Record(**r) for r in data["records"]], data["s_per_image"])
    for cell in cell_keys:
        plain, plain_spi = raw[cell]["plain"]
        cells[cell] = {name: cell_summary(recs, plain, spi, plain_spi)
                       for name, (recs, spi) in raw[cell].items() if name != "plain"}
    pooled_rows = {v: pooled(cells, v) for v in variants if v != "plain"}
    for v, row in pooled_rows.items():
        row["seed"] = pooled_seed_tests(raw, v)
    report = {"config": {k: str(v) for k, v in vars(args).items()}, "seeds": seeds, "criteria": CRITERIA,
              "cells": cells, "pooled": pooled_rows}
    if args.per_seed <= 0:
        report["variance"] = _variance(raw, list(variants))
    text = format_tables(cells, list(variants))
    versus = ""
    if args.versus:
        variant, _, base = args.versus.partition(":")
        versus = versus_text(raw, variant.strip(), base.strip())
        report["versus"] = {"variant": variant.strip(), "base": base.strip(),
                            "seed": pooled_seed_tests(raw, variant.strip(), base.strip())}
        text += "\n\n" + versus
    print(text)
    if "variance" in report:
        print("\nvariance shares (method, prompt, seed, residual):", json.dumps(report["variance"], indent=1))
    (args.out / "matrix.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "records.json").write_text(json.dumps(  # every image's record, for analyses beyond the tables
        {cell: {name: [asdict(r) for r in recs] for name, (recs, _) in by_name.items()}
         for cell, by_name in raw.items()}) + "\n")
    (args.out / "matrix.md").write_text(text + "\n")
    (args.out / "summary.md").write_text(compact_table(cells, list(variants), pooled_rows) + "\n\n"
                                         + pooled_seed_text(pooled_rows) + "\n"
                                         + (f"\n{versus}\n" if versus else ""))
    return report


VARIANCE_LABELS = {"colours": "all colours", "objects": "all objects"}  # the keys of the variance shares


def _variance(raw: dict, variants: Sequence[str]) -> dict:
    """Per cell and metric, the shares of variance of plain vs each variant that are method, prompt and seed."""
    out: dict = {}
    for cell, by in raw.items():
        plain = by["plain"][0]
        for v in variants:
            if v == "plain" or v not in by:
                continue
            for name, get in outcome_metrics([*plain, *by[v][0]]):
                metric = VARIANCE_LABELS.get(name, name)
                values = {("plain", r.prompt, r.seed): float(get(r)) for r in plain}
                values.update({(v, r.prompt, r.seed): float(get(r)) for r in by[v][0]})
                out[f"{cell} | {v} | {metric}"] = variance_shares(values)
    return out


def _run_and_save(item: tuple[str, dict]) -> str:
    path, job = item
    data = _run_job(job)
    Path(path).write_text(json.dumps(data) + "\n")
    return path


if __name__ == "__main__":
    main()
