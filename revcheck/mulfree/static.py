"""The static half of the certificate: trace the whole step with ``make_fx`` and check its parameter slice.

>>> import torch
>>> from revcheck.mulfree import prove_step
>>> w = torch.nn.Parameter(torch.ones(3))
>>> opt = torch.optim.SGD([w], lr=0.5)
>>> def step(x):
...     opt.zero_grad()
...     loss = (w + x).sum()
...     loss.backward()
...     opt.step()
...     return loss.detach() * 2.0          # logging only
>>> proof = prove_step(step, torch.ones(3))
>>> proof.multiplication_free, sorted(proof.monitoring_ops(kind="multiply"))
(False, ['aten::mul.Tensor'])
>>> [v.op for v in proof.violations]          # SGD's step size is a hidden multiply (add_ with alpha=-lr)
['aten::add_.Tensor']

:func:`prove_step` runs ``step`` once under ``make_fx`` (real tensors: the step
really happens, parameters and optimizer state are updated as by one ordinary
call) and records every aten op as a graph node, forward, backward (the
autograd engine's ops are traced too) and optimizer.  The *updated state* are
the persistent tensors the step writes into (parameters, optimizer state,
gradients, buffers: ``get_attr`` constants and inputs that some op mutates).
The *parameter slice* is every node the written values depend on: their
ancestors through data edges, plus every earlier in-place write into a tensor
a slice node reads (a mutation is not an edge, so it is added explicitly).
The proof holds when every node in the slice is allowed by
:func:`revcheck.mulfree.allowlist.classify`; everything outside the slice is
*monitoring* (a logged loss, metrics) and is reported apart, not rejected.

Registered PA ops are leaves of the trace (their implementations branch on
data, which ``make_fx`` cannot follow): they count as allowed here, and their
insides are certified by the runtime :class:`~revcheck.mulfree.MulFreeMode`
(``descend=True``) and by the bit-exact properties.  A step that reads a
tensor's value on the host (``.item()``, ``bool(t)``) cannot be traced at all:
:class:`NotTraceableError` says so.  Level K: a trace of the ops that run on
this device, for these shapes.
"""

from __future__ import annotations

import functools
import operator
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule, Node

from revcheck.errors import UsageError
from revcheck.mulfree.allowlist import ALLOWED_KINDS, Kind, Verdict, classify, op_name, tensor_dtypes
from revcheck.mulfree.enforcer import FloatMultiplyError, OpRecord, UnknownOpError

__all__ = ["NodeVerdict", "NotTraceableError", "StaticProof", "prove_step"]


class NotTraceableError(UsageError):
    """The step cannot be traced (it reads tensor values on the host); use the runtime MulFreeMode."""


@dataclass(frozen=True)
class NodeVerdict:
    """One traced op call and its verdict."""

    node: str
    op: str
    kind: Kind
    reason: str
    dtypes: tuple[str, ...]
    stack: str = ""


@dataclass
class StaticProof:
    """The outcome of :func:`prove_step`."""

    graph: GraphModule
    updated: list[str]
    slice_verdicts: list[NodeVerdict]
    monitoring: list[NodeVerdict]
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[NodeVerdict]:
        """Nodes of the parameter slice that are not allowed (float multiplies, unknown ops)."""
        return [v for v in self.slice_verdicts if v.kind not in ALLOWED_KINDS]

    @property
    def multiplication_free(self) -> bool:
        return bool(self.updated) and not self.violations

    def slice_ops(self, *, kind: Kind | str | None = None) -> Counter[str]:
        return Counter(v.op for v in self.slice_verdicts if kind is None or v.kind == kind)

    def monitoring_ops(self, *, kind: Kind | str | None = None) -> Counter[str]:
        return Counter(v.op for v in self.monitoring if kind is None or v.kind == kind)

    def assert_multiplication_free(self) -> None:
        """Raise :class:`FloatMultiplyError` / :class:`UnknownOpError` for the first bad node of the slice."""
        __tracebackhide__ = True
        if not self.updated:
            raise UsageError(
                "the traced step updates no persistent tensor (no parameter or optimizer state is written): "
                "there is no parameter slice to certify; trace the step that calls optimizer.step()"
            )
        for verdict in self.violations:
            record = OpRecord(
                verdict.op,
                "step (static trace)",
                verdict.kind,
                verdict.reason,
                1,
                set(verdict.dtypes),
                [verdict.stack] if verdict.stack else [],
            )
            if verdict.kind == Kind.MULTIPLY:
                raise FloatMultiplyError(
                    record, f"float multiply in the parameter slice (node {verdict.node})"
                )
            raise UnknownOpError(record, f"unknown op in the parameter slice (node {verdict.node})")

    def summary(self) -> str:
        slice_kinds = Counter(v.kind.value for v in self.slice_verdicts)
        mult = self.monitoring_ops(kind=Kind.MULTIPLY)
        lines = [
            f"static proof (make_fx, level K): {len(self.updated)} updated tensors; parameter slice of "
            f"{len(self.slice_verdicts)} ops: "
            + ", ".join(f"{k} {n}" for k, n in sorted(slice_kinds.items())),
            "  violations in the slice: "
            + (", ".join(f"{v.op} ({v.reason})" for v in self.violations) if self.violations else "none"),
            f"  monitoring only (outside the slice): {len(self.monitoring)} ops, float multiplies: "
            + (", ".join(f"{op} x{n}" for op, n in sorted(mult.items())) if mult else "none"),
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _value(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, Node) else node


def _verdict(node: Node, pa_ops: Mapping[str, Any], declared: Mapping[str, str]) -> NodeVerdict:
    target = node.target
    if target is operator.getitem:
        return NodeVerdict(node.name, "getitem", Kind.DATA, "selects an output of a multi-output op", ())
    if not isinstance(target, torch._ops.OpOverload):
        return NodeVerdict(
            node.name, str(target), Kind.UNKNOWN, "a call that is not an aten/registered op", ()
        )
    args = torch.fx.node.map_aggregate(node.args, _value)
    kwargs = torch.fx.node.map_aggregate(node.kwargs, _value)
    out = node.meta.get("val")
    verdict: Verdict = classify(target, args, kwargs, out, pa_ops=pa_ops, declared=declared)
    stack = (node.meta.get("stack_trace") or "").strip().splitlines()
    return NodeVerdict(
        node.name,
        op_name(target),
        verdict.kind,
        verdict.reason,
        tensor_dtypes(args, kwargs, out),
        "\n".join(stack[-2:]),
    )


def _written_arguments(node: Node) -> list[Node]:
    """Input nodes an in-place / out= op writes into (schema alias annotations with is_write)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return []
    written: list[Node] = []
    for index, argument in enumerate(target._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
        items = value if isinstance(value, (list, tuple)) else [value]
        written += [item for item in items if isinstance(item, Node)]
    return written


def _root(node: Node, cache: dict[Node, Node]) -> Node:
    """The tensor a node's value is (a view of): follow ops whose first output aliases their first input."""
    if node in cache:
        return cache[node]
    root = node
    target = node.target
    if isinstance(target, torch._ops.OpOverload) and node.args and isinstance(node.args[0], Node):
        returns = target._schema.returns
        if returns and returns[0].alias_info is not None:
            root = _root(node.args[0], cache)
    cache[node] = root
    return root


def prove_step(
    step: Callable[..., Any],
    *args: Any,
    declared: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> StaticProof:
    """Trace ``step(*args, **kwargs)`` with ``make_fx`` and check its parameter slice (module docstring).

    Parameters
    ----------
    step
        The whole training step: forward, ``backward()``, ``optimizer.step()``
        (with ``zero_grad``); what it returns is treated as monitoring.
    declared
        ``{"ns::op": why}``: ops you certified yourself, allowed in the slice.

    Raises
    ------
    NotTraceableError
        When the step reads tensor values on the host while tracing.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    from revcheck.nn.mulfree import PA_OPS

    traced = functools.partial(step, **kwargs) if kwargs else step
    try:
        graph = make_fx(traced, tracing_mode="real", record_stack_traces=True)(*args)
    except RuntimeError as error:
        text = str(error)
        if "_local_scalar_dense" in text or "data-dependent" in text:
            raise NotTraceableError(
                "the step reads a tensor's value on the host while it is traced (.item(), bool(t), int(t), "
                "or a library doing so, e.g. torch.optim.Adam's step counter); the static proof cannot "
                "follow host values: use the runtime revcheck.mulfree.MulFreeMode, or keep the value on the "
                "device (revcheck.nn.mulfree.PAAdam does)"
            ) from error
        raise
    nodes = [n for n in graph.graph.nodes if n.op == "call_function"]
    roots: dict[Node, Node] = {}
    mutations: dict[Node, list[Node]] = {}
    for node in nodes:
        for written in _written_arguments(node):
            mutations.setdefault(_root(written, roots), []).append(node)
    persistent = {root for root in mutations if root.op in ("get_attr", "placeholder")}
    position = {node: i for i, node in enumerate(graph.graph.nodes)}
    in_slice: set[Node] = set()
    work = [m for root in persistent for m in mutations[root]]
    while work:
        node = work.pop()
        if node in in_slice or node.op != "call_function":
            continue
        in_slice.add(node)
        for source in node.all_input_nodes:
            work.append(source)
            root = _root(source, roots)
            work += [m for m in mutations.get(root, []) if position[m] < position[node]]
    verdicts = {node: _verdict(node, PA_OPS, declared or {}) for node in nodes}
    updated = [
        f"{root.target} ({_describe_root(root, graph)})"
        for root in sorted(persistent, key=lambda root: position[root])
    ]
    notes = []
    pa_in_slice = sorted({v.op for n, v in verdicts.items() if n in in_slice and v.kind == Kind.PA})
    if pa_in_slice:
        notes.append(
            "registered PA ops are leaves here (certified inside by MulFreeMode(descend=True) and the "
            "bit-exact properties): " + ", ".join(pa_in_slice)
        )
    return StaticProof(
        graph=graph,
        updated=updated,
        slice_verdicts=[verdicts[n] for n in nodes if n in in_slice],
        monitoring=[verdicts[n] for n in nodes if n not in in_slice and verdicts[n].op != "getitem"],
        notes=notes,
    )


def _describe_root(root: Node, graph: GraphModule) -> str:
    value = root.meta.get("val")
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    dtype = str(value.dtype).removeprefix("torch.") if isinstance(value, torch.Tensor) else "?"
    if root.op == "placeholder":
        kind = "input"
    elif str(root.target).startswith("_param_constant"):
        kind = "parameter"
    else:
        kind = "state: optimizer state, gradient or buffer"
    return f"{kind}, {dtype} {shape}"
