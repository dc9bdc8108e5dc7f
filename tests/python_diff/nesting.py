import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *

outer = m.list()
inner = m.dict(k="v")
outer.append(inner)
del inner
show("a dict inside a list", lambda: outer[0]["k"])
outer[0]["k"] = "changed"
show("changed through the list", lambda: outer[0]["k"])
ns = m.Namespace(items=m.list([1, 2]))
ns.items.append(3)
show("a list inside a namespace", lambda: ns.items[:])
q = m.Queue()
q.put(m.list(["queued"]))
show("a proxy through a queue", lambda: q.get()[:])
d = m.dict()
d["l"] = m.list([1])
show("type of a proxy inside a dict", lambda: type(d["l"]).__name__)
show("number of objects", lambda: isinstance(m._number_of_objects(), int))
