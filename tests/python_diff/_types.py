"""Classes the differential scripts store: importable by CPython's own server (which builds
what it unpickles) as well as by the clients."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


class Plain:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return type(other) is Plain and other.v == self.v

    def __repr__(self):
        return "Plain(%r)" % (self.v,)
