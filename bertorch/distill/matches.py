"""Intermediate distillation matches declared as data and generated from the two layer counts.

TextBrewer users write a match table per model size (L3_hidden_mse, L4t_hidden_mse, ...). Here a preset
name plus (n_teacher, n_student, widths) generates the table, so any pair of depths works and a
projection is added only when the widths differ. Layer numbering follows transformers' outputs:
`hidden_states[k]`, with k = 0 the embedding output and k = 1..n the transformer layers; attention of
layer k (1..n) is `attentions[k - 1]`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from loguru import logger

from bertorch.errors import UsageError
from bertorch.jsonfile import read_json_file
from bertorch.losses.distillation import ATTENTION_LOSSES, FEATURE_LOSSES, WIDTH_FREE_LOSSES

FEATURES = ("hidden", "attention", "embedding")


@dataclass(frozen=True)
class Match:
    """One feature loss between a teacher layer and a student layer."""
    teacher_layer: int
    student_layer: int
    feature: str  # "hidden" | "attention" | "embedding"
    loss: str  # a key of FEATURE_LOSSES
    weight: float = 1.0
    proj: tuple[int, int] | None = None  # student_dim -> teacher_dim, a Linear saved with the student


def uniform_layer_map(n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """(teacher, student) hidden-state indices, embedding output (0, 0) included, student layer i <- i·n_t/n_s.

    12->4: (0,0) (3,1) (6,2) (9,3) (12,4). When n_teacher is not a multiple of n_student the teacher index
    is rounded half up, e.g. 12->5: 0 2 5 7 10 12; the last layers are always paired.
    """
    if n_student < 1 or n_teacher < 1:
        raise UsageError(f"layer counts must be >= 1, got teacher {n_teacher}, student {n_student}")
    if n_student > n_teacher:
        raise UsageError(f"the student ({n_student} layers) is deeper than the teacher ({n_teacher}): "
                         "a uniform map needs n_student <= n_teacher; write the matches in a JSON file")
    return [((2 * i * n_teacher + n_student) // (2 * n_student), i) for i in range(n_student + 1)]


def _pairs(feature: str, loss: str):
    """A preset generator: every uniform pair (attention has no layer 0; embedding is layer 0 only)."""
    def generate(n_teacher: int, n_student: int) -> list[Match]:
        pairs = uniform_layer_map(n_teacher, n_student)
        if feature == "attention":
            pairs = pairs[1:]
        elif feature == "embedding":
            pairs = pairs[:1]
        return [Match(t, s, feature, loss) for t, s in pairs]
    return generate


_GENERATORS = {
    "hidden_mse": [_pairs("hidden", "hidden_mse")],
    "hidden_cos": [_pairs("hidden", "cos")],
    "hidden_smmd": [_pairs("hidden", "smmd")],
    "hidden_gram": [_pairs("hidden", "gram")],
    "attention_mse": [_pairs("attention", "attention_mse")],
    "attention_ce": [_pairs("attention", "attention_ce")],
    "embedding": [_pairs("embedding", "hidden_mse")],
    "tinybert": [_pairs("hidden", "hidden_mse"), _pairs("attention", "attention_mse")],
}
PRESETS: tuple[str, ...] = tuple(_GENERATORS)
PRESET_HELP = ("presets (generated for any depths; JSON paths also accepted): " + ", ".join(PRESETS)
               + "; tinybert = hidden_mse + attention_mse")


def _needs_proj(match: Match) -> bool:
    return match.feature in ("hidden", "embedding") and match.loss not in WIDTH_FREE_LOSSES


def _layer(value, key: str, where: str) -> int:
    # TextBrewer writes the smmd pairs as [k, k]; one layer used twice is the same thing here.
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise UsageError(f"{where}: {key}={value}: only one layer per side is supported")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _match_from_dict(d: dict, where: str) -> Match:
    """A Match from our field names, or TextBrewer's (layer_T, layer_S, proj=['linear', s, t])."""
    if not isinstance(d, dict):
        raise UsageError(f"{where}: expected an object, got {d!r}")
    d = dict(d)
    for ours, theirs in (("teacher_layer", "layer_T"), ("student_layer", "layer_S")):
        if theirs in d:
            d[ours] = d.pop(theirs)
    known = {"teacher_layer", "student_layer", "feature", "loss", "weight", "proj"}
    if set(d) - known or not {"teacher_layer", "student_layer", "feature", "loss"} <= set(d):
        raise UsageError(f"{where}: keys {sorted(d)}; expected teacher_layer, student_layer, feature, loss "
                         "[, weight, proj]")
    proj = d.get("proj")
    if proj is not None:
        proj = [p for p in proj if not isinstance(p, str)]  # drop TextBrewer's 'linear'
        if len(proj) != 2:
            raise UsageError(f"{where}: proj must be [student_dim, teacher_dim], got {d['proj']!r}")
        proj = (int(proj[0]), int(proj[1]))
    return Match(_layer(d["teacher_layer"], "teacher_layer", where),
                 _layer(d["student_layer"], "student_layer", where),
                 str(d["feature"]), str(d["loss"]), float(d.get("weight", 1.0)), proj)


def load_matches_json(path: str) -> list[Match]:
    """A JSON file holding a list of Match objects (our keys or TextBrewer's)."""
    items = read_json_file(path, "--matches")
    if not isinstance(items, list):
        raise UsageError(f"{path}: expected a JSON list of matches")
    return [_match_from_dict(d, f"{path}[{i}]") for i, d in enumerate(items)]


def build_matches(names_or_json_paths: list[str], n_teacher: int, n_student: int,
                  teacher_hidden: int, student_hidden: int) -> list[Match]:
    """Concatenate presets and JSON files in order, fill proj where widths differ, drop duplicates, validate.

    proj = (student_hidden, teacher_hidden) is set on hidden/embedding matches whose loss compares vectors
    (all but smmd/mmd/nst) when the widths differ and the match has none.
    """
    matches: list[Match] = []
    for item in names_or_json_paths:
        if item in _GENERATORS:
            for generate in _GENERATORS[item]:
                matches += generate(n_teacher, n_student)
        elif item.endswith(".json") or os.path.isfile(item):
            matches += load_matches_json(item)
        else:
            raise UsageError(f"unknown match preset {item!r}; choose from {list(PRESETS)} or give a JSON file")
    if teacher_hidden != student_hidden:
        matches = [Match(**{**asdict(m), "proj": (student_hidden, teacher_hidden)})
                   if m.proj is None and _needs_proj(m) else m for m in matches]
    matches = list(dict.fromkeys(matches))  # "tinybert hidden_mse" must not count hidden_mse twice
    validate_matches(matches, n_teacher, n_student)
    return matches


def matches_for_models(names_or_json_paths: list[str], teacher_config, student_config) -> list[Match]:
    """`build_matches` for a teacher and a student (transformers configs), checked against both, with the layer
    map and the matches logged; [] without names."""
    if not names_or_json_paths:
        return []
    t, s = teacher_config, student_config
    matches = build_matches(names_or_json_paths, t.num_hidden_layers, s.num_hidden_layers, t.hidden_size,
                            s.hidden_size)
    for i, m in enumerate(matches):
        if m.proj and m.proj != (s.hidden_size, t.hidden_size):
            raise UsageError(f"match #{i} {m}: declares a projection {m.proj[0]}->{m.proj[1]} but the student's "
                             f"hidden size is {s.hidden_size} and the teacher's {t.hidden_size}")
        if m.feature == "attention" and s.num_attention_heads != t.num_attention_heads:
            raise UsageError(f"match #{i} {m}: attention matching needs as many heads in the student "
                             f"({s.num_attention_heads}) as in the teacher ({t.num_attention_heads})")
    n_t, n_s = t.num_hidden_layers, s.num_hidden_layers
    if n_s <= n_t:
        layer_map = " ".join(f"{a}<-{b}" for a, b in uniform_layer_map(n_t, n_s))
        logger.info(f"generated layer map, teacher <- student hidden states ({n_t} -> {n_s} layers): {layer_map}")
    logger.info("intermediate matches:\n" + describe_matches(matches))
    return matches


def validate_matches(matches: list[Match], n_teacher: int, n_student: int) -> None:
    """Raise ValueError naming the match and the layer, feature or loss the models do not have."""
    for i, m in enumerate(matches):
        where = f"match #{i} {m}"
        if m.feature not in FEATURES:
            raise UsageError(f"{where}: unknown feature {m.feature!r}; choose from {list(FEATURES)}")
        if m.loss not in FEATURE_LOSSES:
            raise UsageError(f"{where}: unknown loss {m.loss!r}; choose from {sorted(FEATURE_LOSSES)}")
        if (m.feature == "attention") != (m.loss in ATTENTION_LOSSES):
            raise UsageError(f"{where}: loss {m.loss!r} does not apply to feature {m.feature!r} "
                             f"(attention losses: {sorted(ATTENTION_LOSSES)})")
        if m.feature == "attention" and m.proj is not None:
            raise UsageError(f"{where}: attention matches take no projection")
        low = 1 if m.feature == "attention" else 0
        high = 0 if m.feature == "embedding" else None
        for side, layer, n in (("teacher", m.teacher_layer, n_teacher), ("student", m.student_layer, n_student)):
            top = n if high is None else high
            if not low <= layer <= top:
                kinds = {"attention": f"attention layers 1..{n}",
                         "hidden": f"hidden states 0..{n} (0 = embedding output)",
                         "embedding": "only the embedding output, layer 0"}[m.feature]
                raise UsageError(f"{where}: the {side} has no {m.feature} layer {layer}; it has {kinds}")


def describe_matches(matches: list[Match]) -> str:
    """A fixed-width table for the start-up log: one row per match."""
    rows = [("#", "feature", "teacher", "student", "loss", "weight", "proj")]
    rows += [(str(i), m.feature, str(m.teacher_layer), str(m.student_layer), m.loss, f"{m.weight:g}",
              "-" if m.proj is None else f"{m.proj[0]}->{m.proj[1]}") for i, m in enumerate(matches)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
