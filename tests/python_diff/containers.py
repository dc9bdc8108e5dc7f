import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *

ns = m.Namespace(x=1, b=[1, "two"])
ns.y = 2
show("namespace", lambda: (ns.x, ns.y, ns.b))
show("namespace missing", lambda: ns.nope)
del ns.y
show("namespace deleted", lambda: ns.y)
show("namespace getvalue", lambda: ns._getvalue())
show("namespace str", lambda: str(ns))
v = m.Value("i", 7)
v.value = 8
show("value", lambda: v.value)
show("value getvalue", lambda: v._getvalue())
show("value str", lambda: str(v))
show("value unchecked", lambda: m.Value("i", 1.5).value)
a = m.Array("i", [1, 2, 3])
a[1] = 5
show("array", lambda: (len(a), a[0], a[1], a[-1]))
show("array out of range", lambda: a[3])
show("array slices", lambda: (a[:], a[::2], a[::-1], a[1:]))
show("array getvalue", lambda: a._getvalue())
show("array str", lambda: str(a))
kind("array float into int", lambda: a.__setitem__(0, 1.5))
kind("array str into int", lambda: a.__setitem__(0, "x"))
kind("array overflow", lambda: a.__setitem__(0, 2 ** 40))
show("array after refusals", lambda: a[:])
kind("array create refused", lambda: m.Array("i", [1.5]))
kind("array bad typecode", lambda: m.Array("z", [1]))
show("array slice assignment", lambda: a.__setitem__(slice(0, 2), [5, 6]))
f = m.Array("d", [1, 2.5])
show("double array", lambda: (f[:], f[0]))
f[0] = 3
show("double array int", lambda: f[0])
show("array of a length", lambda: m.Array("b", 3)[:])
show("char array", lambda: m.Array("u", "ab")[:])
b = m.Array("B", [1, 255])
kind("unsigned negative", lambda: b.__setitem__(0, -1))
show("unsigned", lambda: b[:])
