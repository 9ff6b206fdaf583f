"""The one planted-bug harness: every gallery record says which check must catch which bug, and how.

A gallery module (``tests/gallery/<family>_bugs.py``) exposes ``PLANTED_BUGS``, a
list of :class:`PlantedBug`.  Each record names

* the **check**: a property body or a user-facing check.  Property bodies take the
  Hypothesis data object and the implementation under test,
  ``check(data, impl)``; plain checks take only the implementation, ``check(impl)``
  (set ``hypothesis=False``).  The implementation is always *injected*: production
  code carries no test hooks;
* the **wrong** implementation (the planted bug) and the **right** one (the real
  implementation, on which the same check must pass);
* the **exact error type** that must catch it: a specific class such as
  ``BitMismatchError`` or ``FunctionNotPreservedError``, never a bare
  ``AssertionError`` or ``Exception`` (a check that fails for another reason must
  not count as a catch).

Hypothesis runs in one fixed regime, independent of the active profile:
derandomized, no database, no deadline, no shrinking (a catch only needs the
failure), ``max_examples`` from the record.  ``tests/test_gallery.py`` runs every
record twice: against ``wrong`` (must raise ``error``) and against ``right`` (must
pass).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

__all__ = ["GENERIC_ERRORS", "PlantedBug", "all_planted_bugs", "run_check"]

# Declaring one of these as "the error that catches the bug" would let any failure count.
GENERIC_ERRORS: tuple[type[BaseException], ...] = (BaseException, Exception, AssertionError, ValueError)


@dataclass(frozen=True)
class PlantedBug:
    """One planted bug and the check that must catch it (one record per bug-and-check pair)."""

    name: str
    mistake: str
    check: Callable[..., None]
    wrong: Any
    right: Any
    error: type[BaseException]
    family: str = ""
    hypothesis: bool = True
    max_examples: int = 100
    requires: tuple[str, ...] = ()  # optional dependencies (module names); missing ones skip the record
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.error in GENERIC_ERRORS:
            raise TypeError(
                f"planted bug {self.name!r} declares {self.error.__name__} as the error that catches it; "
                "declare the specific error type the check raises (e.g. BitMismatchError)"
            )
        if self.max_examples < 1:
            raise ValueError(f"planted bug {self.name!r}: max_examples must be >= 1")

    @property
    def id(self) -> str:
        check_name = getattr(self.check, "__name__", repr(self.check))
        return f"{self.family}:{self.name}:{check_name}" if self.family else f"{self.name}:{check_name}"


def _hunting_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def run_check(bug: PlantedBug, implementation: Any) -> None:
    """Run ``bug.check`` against ``implementation`` in the harness's fixed regime; errors propagate."""
    __tracebackhide__ = True
    if not bug.hypothesis:
        bug.check(implementation)
        return

    @_hunting_settings(bug.max_examples)
    @given(data=st.data())
    def property_under_test(data: st.DataObject) -> None:
        bug.check(data, implementation)

    property_under_test()


def flattened(error: BaseException) -> Iterator[BaseException]:
    """The leaf exceptions of ``error`` (an ExceptionGroup holds several distinct failures)."""
    inner = getattr(error, "exceptions", None)
    if isinstance(inner, tuple):
        for each in inner:
            yield from flattened(each)
    else:
        yield error


# Gallery modules still on their own record types, being migrated to PlantedBug (House issue).
# Empty this set as each one moves; a module listed here is not collected by the harness.
_NOT_YET_MIGRATED = frozenset(
    {"audit_kernels", "bdia_bugs", "pam_oracle_mutants", "pam_torch_mutants", "pam_triton_mutants"}
)


def gallery_modules() -> list[str]:
    """Names of the modules in ``tests/gallery`` (each may define ``PLANTED_BUGS``)."""
    import tests.gallery as gallery

    return sorted(
        f"tests.gallery.{info.name}"
        for info in pkgutil.iter_modules(gallery.__path__)
        if info.name not in _NOT_YET_MIGRATED
    )


def all_planted_bugs() -> list[PlantedBug]:
    """Every record of every gallery module, in a fixed order."""
    records: list[PlantedBug] = []
    for name in gallery_modules():
        module = importlib.import_module(name)
        for record in getattr(module, "PLANTED_BUGS", ()):
            if not isinstance(record, PlantedBug):
                raise TypeError(f"{name}.PLANTED_BUGS holds {record!r}, not a tests.harness.PlantedBug")
            records.append(record)
    return records
