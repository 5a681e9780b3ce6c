"""Mean and 95 % confidence interval over stories, and the Table 1 column set.

    mean +- t_{0.975, n-1} * sd / sqrt(n)      (Student t; sd with n - 1; no interval for n < 2)
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

# Table 1 of the paper, in its order: (key, column header)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("c_cons", "C-Cons"), ("e_cons", "E-Cons"), ("inter_avg", "Inter avg"), ("s_align", "S-Align"),
    ("subject", "Subject"), ("background", "BG"), ("intra_avg", "Intra avg"), ("aesthetic", "Aesthetic"),
    ("dynamic_degree", "Dyn. degree"))

# two-sided 97.5 % Student t quantiles for 1..30 degrees of freedom; 1.96 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def mean_ci(values: Iterable[Optional[float]]) -> dict:
    """-> {"mean", "ci95" (half width, None for n < 2), "n"} over the non-None values."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    m = sum(v) / n
    if n < 2:
        return {"mean": m, "ci95": None, "n": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    return {"mean": m, "ci95": t975(n - 1) * sd / math.sqrt(n), "n": n}


def aggregate(scores: Sequence[Mapping]) -> dict:
    """Story scores (`score.score_story(...).to_json()`) -> per metric mean +- CI, overall and per
    pattern. Refuses to pool one metric computed with different models (e.g. S-Align from ViCLIP
    and from CLIP)."""
    models: dict[str, str] = {}
    for s in scores:
        for k, name in s.get("models", {}).items():
            if k in models and models[k] != name:
                raise ValueError(f"metric {k!r} was computed with {models[k]!r} for some stories and "
                                 f"{name!r} for story {s.get('story')!r}; score all stories with one model")
            models[k] = name
    groups: dict[str, list[Mapping]] = {"all": list(scores)}
    for s in scores:
        groups.setdefault(str(s.get("pattern")), []).append(s)
    out = {"models": models, "groups": {}}
    for g, items in groups.items():
        out["groups"][g] = {k: mean_ci(i["metrics"].get(k) for i in items) for k, _ in COLUMNS}
        out["groups"][g]["stories"] = len(items)
    return out
