"""The one planted-bug harness: every gallery record says which check must catch which bug, and how.

A gallery module (``tests/gallery/<family>_bugs.py``) exposes ``PLANTED_BUGS``, a
list of :class:`PlantedBug`.  Each record names

* the **check**: a property body or a user-facing check.  Property bodies take the
  Hypothesis data object and the implementation under test,
  ``check(data, impl)``; plain checks take only the implementation, ``check(impl)``
  (set ``hypothesis=False``).  The implementation is always *injected*: production
  code carries no test hooks.  :func:`check_with` binds a check's other
  parameters (an op, a format) and says where the implementation goes, e.g.
  ``check_with(check_mix, inject="oracle", fmt_name="fp32")``;
* the **wrong** implementation (the planted bug) and the **right** one (the real
  implementation, on which the same check must pass);
* the **exact error type** that must catch it: a specific class such as
  ``BitMismatchError`` or ``FunctionNotPreservedError``, never a bare
  ``AssertionError`` or ``Exception`` (a check that fails for another reason must
  not count as a catch).

Hypothesis runs in one fixed regime, independent of the active profile:
derandomized, no database, no deadline, no shrinking (a catch only needs the
failure), ``max_examples`` from the record; and every example starts from the
same global torch RNG state (``torch.manual_seed(0)``, restored afterwards), as
Hypothesis itself does for ``random`` and NumPy: a check that draws from it
(module initialisation, dropout) sees the same numbers whatever ran before.

``tests/test_gallery.py`` runs every record twice: against ``wrong`` (must raise
``error``) and against ``right`` (must pass).  Choose ``max_examples`` with margin
over the example that first catches the bug, and measure it: ``python -m
tests.harness [family]`` prints, for every record, the example at which its check
first fails (``examples_to_catch``).  A bug that lives in a corner random draws
rarely reach is drawn early by the check itself (counted cases, a corner drawn
first), not found by raising ``max_examples``.  Editing :func:`run_check`'s inner
test changes Hypothesis' derandomized seed (it hashes the source), and so every
index: measure again after such an edit.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

__all__ = ["GENERIC_ERRORS", "PlantedBug", "all_planted_bugs", "check_with", "examples_to_catch", "run_check"]

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


@functools.cache
def check_with(
    function: Callable[..., None], *, inject: str | None = None, **params: Any
) -> Callable[..., None]:
    """``function`` as a harness check: ``check(data, impl)`` (or ``check(impl)``) with ``params`` bound.

    The implementation under test is passed as the keyword ``inject`` when given,
    else positionally after ``data``.  The check is named after ``function`` and
    its parameters (``check_binary_op_equals_oracle[op=pam_mul]``, shown in test
    ids); equal arguments give the same object, so one check on one real
    implementation runs once however many records share it.
    """

    def check(*args: Any) -> None:
        __tracebackhide__ = True
        *leading, implementation = args
        if inject is None:
            function(*leading, implementation, **params)
        else:
            function(*leading, **params, **{inject: implementation})

    described = ", ".join(f"{key}={value}" for key, value in params.items() if key != "device")
    check.__name__ = f"{function.__name__}[{described}]" if described else function.__name__
    check.__qualname__ = check.__name__
    check.__doc__ = function.__doc__
    return check


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


@contextlib.contextmanager
def _fixed_torch_rng() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def run_check(bug: PlantedBug, implementation: Any) -> None:
    """Run ``bug.check`` against ``implementation`` in the harness's fixed regime; errors propagate."""
    __tracebackhide__ = True
    if not bug.hypothesis:
        with _fixed_torch_rng():
            bug.check(implementation)
        return

    @_hunting_settings(bug.max_examples)
    @given(data=st.data())
    def property_under_test(data: st.DataObject) -> None:
        with _fixed_torch_rng():
            bug.check(data, implementation)

    property_under_test()


def examples_to_catch(bug: PlantedBug, limit: int = 1000) -> int | None:
    """The number of the example (1-based) at which ``bug.check`` first fails on ``bug.wrong``.

    In the harness's regime, with ``max_examples=limit``; None when it does not
    fail within ``limit`` examples, or fails with another error than ``bug.error``.
    For choosing a record's ``max_examples`` (keep a margin: a change of the
    strategies moves the index).
    """
    index, error = _first_failure(bug, limit)
    if error is None or not all(isinstance(leaf, bug.error) for leaf in flattened(error)):
        return None
    return index


def _first_failure(bug: PlantedBug, limit: int) -> tuple[int | None, BaseException | None]:
    """(number of the first failing example, its error), or (None, None) when all ``limit`` pass."""
    if not bug.hypothesis:
        try:
            run_check(bug, bug.wrong)
        except BaseException as error:
            return 1, error
        return None, None
    calls = 0

    def counting(data: st.DataObject, implementation: Any) -> None:
        nonlocal calls
        calls += 1
        bug.check(data, implementation)

    counted = PlantedBug(bug.name, bug.mistake, counting, bug.wrong, bug.right, bug.error, max_examples=limit)
    try:
        run_check(counted, bug.wrong)
    except BaseException as error:
        # The failing example is run once more to report it: the first failure is one call earlier.
        return calls - 1, error
    return None, None


def flattened(error: BaseException) -> Iterator[BaseException]:
    """The leaf exceptions of ``error`` (an ExceptionGroup holds several distinct failures)."""
    inner = getattr(error, "exceptions", None)
    if isinstance(inner, tuple):
        for each in inner:
            yield from flattened(each)
    else:
        yield error


def gallery_modules() -> list[str]:
    """Names of the modules in ``tests/gallery`` (each may define ``PLANTED_BUGS``); all are collected."""
    import tests.gallery as gallery

    return sorted(f"tests.gallery.{info.name}" for info in pkgutil.iter_modules(gallery.__path__))


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


def _report(family: str | None = None, limit: int = 1000) -> None:
    """Print, for each record (of ``family``), the example that catches it and its max_examples."""
    for bug in all_planted_bugs():
        if family and bug.family != family:
            continue
        missing = [name for name in bug.requires if importlib.util.find_spec(name) is None]
        if missing:
            print(f"{bug.id}: skipped ({', '.join(missing)} not installed)")
            continue
        index, error = _first_failure(bug, limit)
        if error is None:
            verdict = f"NOT caught in {limit} examples"
        elif not all(isinstance(leaf, bug.error) for leaf in flattened(error)):
            verdict = f"WRONG ERROR at example {index}: {type(error).__name__}, not {bug.error.__name__}"
        elif index is not None and index > bug.max_examples:
            verdict = f"caught at example {index}, BEYOND max_examples={bug.max_examples}"
        else:
            verdict = f"caught at example {index} of max_examples={bug.max_examples}"
        print(f"{bug.id}: {verdict}", flush=True)


if __name__ == "__main__":
    # Through the imported module: the galleries' records are instances of *its* PlantedBug, not __main__'s.
    from tests import harness

    harness._report(sys.argv[1] if len(sys.argv) > 1 else None)
