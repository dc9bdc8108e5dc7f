import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *

d = m.dict(a=1)
d["b"] = 2
d["none"] = None
show("getitem", lambda: (d["a"], d["none"], len(d)))
show("missing key", lambda: d["zz"])
show("get", lambda: (d.get("none", "default"), d.get("zz", "default"), d.get("zz")))
show("get arity", lambda: d.get())
show("pop default", lambda: (d.pop("none", "default"), d.pop("zz", "default")))
show("pop missing", lambda: d.pop("zz"))
show("setdefault", lambda: (d.setdefault("c", 3), d.setdefault("c", 4), d["c"]))
show("setdefault without key", lambda: d.setdefault())
show("setitem without value", lambda: d.__setitem__("k"))
d.update({"e": 5}, f=6)
d.update([("g", 7)])
show("update", lambda: sorted(d.items()))
show("update arity", lambda: d.update({"a": 1}, {"b": 2}))
show("update bad sequence", lambda: d.update([(1, 2, 3)]))
show("keys values items", lambda: (list(d.keys()), list(d.values()), list(d.items())))
show("contains", lambda: ("a" in d, "zz" in d))
show("copy", lambda: d.copy())
show("popitem", lambda: (d.popitem(), len(d)))
show("popitem empty", lambda: m.dict().popitem())
del d["a"]
show("delitem", lambda: "a" in d)
show("delitem missing", lambda: d.__delitem__("zz"))
show("str", lambda: str(m.dict({"a": [1e16, True], 2: None, (1, 2): b"x"})))
src = m.dict(x=1, y=2)
dst = m.dict(z=3)
dst.update(src)
show("update from a proxy", lambda: dst.copy())
show("dict of a proxy", lambda: m.dict(src).copy())
show("dict of pairs and kwds", lambda: m.dict([("p", 1)], q=2).copy())
n = m.dict()
n[1] = "a"
show("numeric keys", lambda: (n[1.0], n[True], 1.0 in n, len(n)))
n[1.0] = "b"
show("numeric key replaced", lambda: (len(n), n[1], list(n.keys())))
for label, key in (("list key", [1]), ("dict key", {"a": 1}), ("set key", {1}),
                   ("tuple with list key", (1, [2])), ("bytearray key", bytearray(b"x"))):
    show(label, lambda: n.__setitem__(key, 2))
show("after refused keys", lambda: n.copy())
show("clear", lambda: (d.clear(), len(d)))
show("iterate", lambda: sorted(k for k in m.dict(a=1, b=2)))
show("list of dict proxy", lambda: sorted(list(m.dict(a=1, b=2))))
o = m.dict(x=1, y=2, z=3)
show("for k in d", lambda: [k for k in o])
show("list(d)", lambda: list(o))
show("tuple of items through keys", lambda: [(k, o[k]) for k in o])
it = iter(o)
show("iter and next", lambda: (next(it), next(it), next(it), next(it, "end")))
show("next after the end", lambda: next(it))
show("type of the iterator", lambda: type(iter(o)).__name__)
show("iterate an empty dict", lambda: list(m.dict()))
def changed_value():
    it = iter(o)
    first = next(it)
    o["y"] = 20
    return (first, list(it))
show("a value changed while iterating", changed_value)
def grown():
    it = iter(o)
    next(it)
    o["w"] = 4
    return next(it)
show("a dict that grew while iterating", grown)
def shrunk():
    it = iter(o)
    next(it)
    del o["w"]
    try:
        next(it)
    except RuntimeError as e:
        first = str(e)
    return (first, outcome(lambda: next(it)))
show("a dict that shrank while iterating, twice", shrunk)
for method in ("send", "throw", "close"):
    show("iterator " + method, lambda: getattr(iter(o), method)(None))
def dropped():
    before = m._number_of_objects()
    it = iter(o)
    first = next(it)
    during = m._number_of_objects() - before
    del it
    return (first, during, m._number_of_objects() - before)
show("an iterator dropped before the end", dropped)
h = m.dict(a=1)
show("iterate a dict proxy kept in a list", lambda: list(m.list([h])[0]))
show("iterate a dict proxy whose manager is known", lambda: [list(x) for x in [h, o]])
def keys_changed():
    k = m.dict(x=1, y=2, z=3)
    it = iter(k)
    next(it)
    del k["x"]
    k["q"] = 4
    return outcome(lambda: list(it)), outcome(lambda: next(it))
show("keys changed while iterating, then", keys_changed)
def later_key_replaced():
    k = m.dict(x=1, y=2, z=3)
    it = iter(k)
    next(it)
    del k["z"]
    k["q"] = 4
    return list(it)
show("a later key replaced while iterating", later_key_replaced)
