"""Building node trees from Python in one expression per node: the display (display.py), its materials and the
Gaussian edits (edits.py) wire hundreds of sockets, which `nodes.new` + `links.new` + `default_value` per socket
would make unreadable."""
from __future__ import annotations

import bpy


def _enabled(sockets) -> list:
    return [s for s in sockets if s.enabled]


class NodeGraph:
    """A node tree being built. `node(kind, *inputs, named=None, **props)` makes a node: keyword arguments are
    its properties (set first: they decide which sockets are enabled), positional inputs fill its enabled input
    sockets in order (None skips one), `named` fills inputs by socket name. An input that is a socket is
    linked; anything else becomes the socket's default value."""

    def __init__(self, tree):
        self.tree = tree

    def node(self, kind: str, *inputs, named: dict | None = None, **props):
        node = self.tree.nodes.new(kind)
        for key, value in props.items():
            setattr(node, key, value)
        pairs = list(zip(_enabled(node.inputs), inputs)) + [(node.inputs[k], v) for k, v in (named or {}).items()]
        for socket, value in pairs:
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            elif value is not None:
                socket.default_value = value
        return node

    def out(self, kind: str, *inputs, output: int | str | None = None, named: dict | None = None, **props):
        """An output socket of a new node: `output` by index or name, else its first enabled one."""
        outputs = self.node(kind, *inputs, named=named, **props).outputs
        return _enabled(outputs)[0] if output is None else outputs[output]

    def link(self, socket, node, index: int | str = 0) -> None:
        self.tree.links.new(socket, node.inputs[index])

    def math(self, op: str, *inputs, **props):
        return self.out("ShaderNodeMath", *inputs, operation=op, **props)

    def vmath(self, op: str, *inputs, output: int | str | None = None, named: dict | None = None):
        return self.out("ShaderNodeVectorMath", *inputs, output=output, named=named, operation=op)

    def compare(self, op: str, a, b):
        return self.out("FunctionNodeCompare", a, b, data_type='FLOAT', operation=op)

    def logic(self, op: str, *inputs):
        return self.out("FunctionNodeBooleanMath", *inputs, operation=op)

    def attribute(self, name: str, data_type: str):
        """A geometry-nodes Named Attribute field."""
        return self.out("GeometryNodeInputNamedAttribute", name, data_type=data_type)
