"""Fresh names for the nodes and values a pass creates, unique in the whole model.

onnxruntime refuses a model in which two nodes share a name, and ONNX wants
every value name defined once, subgraphs included (a body may not redefine a
name of the scope around it).  Names a pass derives from existing ones
(``<node>_zero_weight``, ``<output>_fill``) can already exist, and unnamed
nodes all derive the same name; so every generated name goes through
:class:`Names`, which checks it against every node and value name of the graph
and of the subgraphs its nodes hold.  One namespace serves nodes and values:
a name unique among both is unique among either.
"""

from __future__ import annotations

import onnx_ir as ir


def taken_names(graph: ir.Graph) -> set[str]:
    """Every node name and value name of ``graph`` and of the subgraphs its nodes hold."""
    names: set[str] = set()
    for scope in (graph, *graph.subgraphs()):
        names.update(value.name for value in (*scope.inputs, *scope.outputs) if value.name)
        names.update(name for name in scope.initializers if name)
    for node in graph.all_nodes():
        if node.name:
            names.add(node.name)
        names.update(value.name for value in node.outputs if value.name)
    return names


class Names:
    """Hands out names no node or value of the model has, nor any name handed out before.

    Built once per rewrite batch: collecting the names walks the whole model,
    handing one out is a set lookup.
    """

    def __init__(self, graph: ir.Graph) -> None:
        self._taken = taken_names(graph)

    def fresh(self, hint: str) -> str:
        """``hint`` itself when free, else ``hint_1``, ``hint_2``, ...; never empty."""
        base = hint or "onnxprune"
        name, suffix = base, 1
        while name in self._taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self._taken.add(name)
        return name


def fresh_name(graph: ir.Graph, hint: str) -> str:
    """One name unique in the model that ``graph`` (the main graph) belongs to."""
    return Names(graph).fresh(hint)
