"""The IR verifier: the invariants of ``docs/ir-invariants.md``, checked.

``verify(graph)`` checks structure (single assignment, topological order, every read
defined, outputs produced, parameter types, well-formed types and opsets) and raises
``IRVerificationError`` listing every problem found. ``verify(graph, types=True)``
also re-infers types with ONNX's strict shape inference and checks that every declared
dtype and static dimension agrees with it.
"""

from __future__ import annotations

from optc.errors import InvalidModelError
from optc.ir.dtypes import is_valid_dtype, split_container
from optc.ir.graph import Graph, Value, dtype_name, node_reads

MAX_REPORTED = 20


class IRVerificationError(InvalidModelError):
    """The graph breaks an IR invariant; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:MAX_REPORTED])
        more = f" (+{len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"IR verification failed: {shown}{more}")
        self.problems = problems


def verify(graph: Graph, types: bool = False) -> Graph:
    """Raise ``IRVerificationError`` if ``graph`` breaks an invariant; return it otherwise."""
    problems = structural_problems(graph, outer=frozenset())
    if not problems and types:
        problems = type_problems(graph)
    if problems:
        raise IRVerificationError(problems)
    return graph


def structural_problems(graph: Graph, outer: frozenset[str], body: bool = False) -> list[str]:
    """Every structural problem of ``graph``; a ``body`` may read ``outer`` names."""
    problems: list[str] = []
    defined: dict[str, str] = {}

    def define(name: str, where: str) -> None:
        if not name:
            problems.append(f"{where} defines a value with an empty name")
        elif name in defined:
            problems.append(f"value {name!r} defined twice ({defined[name]} and {where})")
        defined[name] = where

    for name, array in graph.params.items():
        define(name, "param")
        if array.dtype.kind == "O" and array.size and not isinstance(array.flat[0], str | bytes):
            problems.append(f"param {name!r} holds Python objects, not tensor data")
        elif not is_valid_dtype(dtype_name(array.dtype)):
            problems.append(f"param {name!r} has unsupported dtype {array.dtype}")
    for value in graph.inputs:
        define(value.name, "input")
        problems.extend(_type_form_problems(value, "input"))

    # Names some later node defines: reading one early is an ordering bug, not a typo.
    made_by_nodes = {out.name for node in graph.nodes for out in node.outputs}
    for index, node in enumerate(graph.nodes):
        where = f"node #{index} {node.op}"
        for name in node_reads(node):
            if name in defined or name in outer:
                continue
            if name in made_by_nodes:
                problems.append(f"{where} reads {name!r} before it is defined "
                                "(nodes are not in topological order)")
            else:
                problems.append(f"{where} reads {name!r}, which is never defined")
        for sub in node.subgraphs():
            problems.extend(f"{where} body: {p}" for p in
                            structural_problems(sub, outer | frozenset(defined), body=True))
        for out in node.outputs:
            if out.name:  # '' is an omitted optional output: it defines nothing
                define(out.name, where)
            problems.extend(_type_form_problems(out, where))

    for value in graph.outputs:
        if value.name not in defined and value.name not in outer:
            problems.append(f"output {value.name!r} is never produced")
            continue
        if value.name in defined:
            problems.extend(_agreement_problems(value, graph.value(value.name), "output"))

    if not body:  # bodies inherit the opsets of the graph that holds them
        known = {"ai.onnx" if d == "" else d for d in graph.opsets}
        for domain in sorted(_used_domains(graph)):
            if ("ai.onnx" if domain == "" else domain) not in known:
                problems.append(f"domain {domain or 'ai.onnx'!r} is used but has no opset "
                                "version")
    return problems


def _used_domains(graph: Graph) -> set[str]:
    found = set()
    for node in graph.nodes:
        found.add(node.domain)
        for sub in node.subgraphs():
            found |= _used_domains(sub)
    return found


def _type_form_problems(value: Value, where: str) -> list[str]:
    problems = []
    if value.dtype is not None and not is_valid_dtype(value.dtype):
        problems.append(f"{where}: value {value.name!r} has unknown dtype {value.dtype!r}")
    if value.shape is not None and split_container(value.dtype or "") is not None:
        problems.append(f"{where}: value {value.name!r} of type {value.dtype} has a shape; "
                        "sequence and optional values have none")
    if value.shape is not None:
        for dim in value.shape:
            if isinstance(dim, bool) or not (dim is None or isinstance(dim, str)
                                            or (isinstance(dim, int) and dim >= 0)):
                problems.append(f"{where}: value {value.name!r} has bad dimension {dim!r}")
    return problems


def _agreement_problems(declared: Value, actual: Value, where: str) -> list[str]:
    problems = []
    if declared.dtype and actual.dtype and declared.dtype != actual.dtype:
        problems.append(f"{where} {declared.name!r} declared {declared.dtype}, "
                        f"produced as {actual.dtype}")
    if _static_dims_disagree(declared.shape, actual.shape):
        problems.append(f"{where} {declared.name!r} declared shape {declared.shape}, "
                        f"produced as {actual.shape}")
    return problems


def _static_dims_disagree(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None:
        return False
    if len(a) != len(b):
        return True
    pairs = zip(a, b, strict=True)
    return any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in pairs)


def type_problems(graph: Graph) -> list[str]:
    """Compare every declared type with ONNX strict shape inference on the exported graph."""
    import onnx

    from optc.frontend.onnx_export import to_onnx
    from optc.frontend.onnx_import import value_from_onnx

    model = to_onnx(graph, keep_value_types=False)
    for output in model.graph.output:
        output.type.Clear()  # let inference derive outputs too, then compare them below
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises several unrelated types here
        return [f"shape inference rejects the graph: {str(exc).splitlines()[0]}"]
    found = {vi.name: value_from_onnx(vi) for vi in
             list(inferred.graph.value_info) + list(inferred.graph.output)}
    problems: list[str] = []
    for node in graph.nodes:
        for out in node.outputs:
            if out.name in found:
                problems.extend(_agreement_problems(out, found[out.name], f"{node.op} output"))
    for out in graph.outputs:
        if out.name in found:
            problems.extend(_agreement_problems(out, found[out.name], "graph output"))
    return list(dict.fromkeys(problems))  # a node output that is a graph output: say it once


__all__ = ["IRVerificationError", "verify"]
