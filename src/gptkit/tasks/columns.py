"""Which columns of a file hold each field of a task: the user's `--column` overrides first, then
the column names of the common benchmarks (a task type lists its candidates)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import GptkitError
from .examples import label_key
from .readers import Row


@dataclass
class ResolvedColumns:
    """The concrete columns of one file for each field (several columns are joined or listed)."""

    by_field: dict[str, list[str]]
    choices_is_list: bool = False  # one column holding a JSON list, rather than one column per candidate


def columns_of(rows: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:50]:
        for k in row.fields:
            seen.setdefault(k, None)
    return list(seen)


def _shown(name: str) -> str:
    """A column name as an error line can show it: quoted when it holds a newline or another control
    character, which would break the one-line message."""
    return name if name.isprintable() else repr(name)


def missing(rows: list[Row], what: str, candidates: tuple[str, ...] | list[str]) -> GptkitError:
    return GptkitError(
        f"{rows[0].source}: missing column for {what} (looked for {', '.join(candidates)}; "
        f"columns found: {', '.join(map(_shown, columns_of(rows))) or 'none'}); name it with --column "
        f"{what.split()[0]}=NAME"
    )


@dataclass
class ColumnPicker:
    """Looks up columns of one file, honouring the user's overrides (field -> "col" or "c1,c2")."""

    rows: list[Row]
    overrides: dict[str, str]
    present: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.present = set(columns_of(self.rows))

    def override(self, name: str) -> list[str] | None:
        if name not in self.overrides:
            return None
        cols = [c.strip() for c in self.overrides[name].split(",") if c.strip()]
        absent = [c for c in cols if c not in self.present]
        if absent:
            raise missing(self.rows, f"{name} (--column {name}={self.overrides[name]})", absent)
        return cols

    def first(self, name: str, candidates: tuple[str, ...]) -> list[str] | None:
        """The override for `name`, else the first candidate column the file has."""
        given = self.override(name)
        if given is not None:
            return given
        return next(([c] for c in candidates if c in self.present), None)

    def require(self, name: str, candidates: tuple[str, ...]) -> list[str]:
        cols = self.first(name, candidates)
        if cols is None:
            raise missing(self.rows, name, candidates)
        return cols

    def pair(self, a_name: str, b_name: str, pairs: tuple[tuple[str, str], ...]) -> tuple[list[str], list[str]]:
        """Two text fields matched as a pair of columns, so that e.g. QNLI's (question, sentence) is
        not confused with SST-2's lone `sentence`."""
        a, b = self.override(a_name), self.override(b_name)
        if a is None or b is None:
            for ca, cb in pairs:
                if (a is not None or ca in self.present) and (b is not None or cb in self.present):
                    a, b = a or [ca], b or [cb]
                    break
        if a is None or b is None:
            names = [f"{ca}+{cb}" for ca, cb in pairs]
            raise missing(self.rows, f"{a_name if a is None else b_name} (a pair such as {' or '.join(names)})", names)
        return a, b

    def numbered(self, prefix: str) -> list[str]:
        """`ending0, ending1, ...` or `answer1, answer2, ...`: consecutive numbers from 0 or 1."""
        for start in (0, 1):
            cols = []
            i = start
            while f"{prefix}{i}" in self.present:
                cols.append(f"{prefix}{i}")
                i += 1
            if cols:
                return cols
        return []

    def label(self, candidates: tuple[str, ...], taken: dict[str, list[str]], need_label: bool) -> list[str]:
        """The label column (optional when `need_label` is False: prediction on unlabelled data); a
        column already used by another field is not taken as the label."""
        label = self.override("label")
        if label is None:
            used = sum(taken.values(), [])
            label = next(([c] for c in candidates if c in self.present and c not in used), None)
        if label is None and need_label:
            raise missing(self.rows, "label", candidates)
        if label and not need_label and all(label_key(r.fields.get(label[0])) is None for r in self.rows):
            return []  # a label column with no label in it (a datasets test split's -1s): unlabelled data
        return label or []
