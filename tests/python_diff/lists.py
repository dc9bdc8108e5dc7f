import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *

l = m.list([3, 1, 2])
show("getitem", lambda: (l[0], l[-1], len(l)))
show("getitem out of range", lambda: l[5])
show("setitem out of range", lambda: l.__setitem__(5, 0))
show("delitem out of range", lambda: l.__delitem__(5))
l.append(4); l.insert(0, 0); l.extend([5, 6])
show("append insert extend", lambda: l[:])
show("pop", lambda: (l.pop(), l.pop(0), l[:]))
show("pop out of range", lambda: l.pop(99))
show("pop empty", lambda: m.list().pop())
show("remove missing", lambda: l.remove(99))
show("index", lambda: (l.index(2), l.index(2, 1), l.index(5, -2)))
show("index bounded missing", lambda: l.index(3, 1, 2))
show("count contains", lambda: (l.count(1), 1 in l, 99 in l))
kind("append without item", lambda: l.append())
show("insert without item", lambda: l.insert(0))
s = m.list(range(10))
show("slices", lambda: (s[2:5], s[::2], s[::-3], s[7:2:-2], s[-3:], s[100:]))
show("zero step", lambda: s[::0])
s[1:3] = ["a", "b", "c"]
show("slice assignment", lambda: s[:])
s[::2] = list("ABCDEF")
show("step assignment", lambda: s[:])
show("step assignment size", lambda: s.__setitem__(slice(None, None, 2), [1]))
del s[::3]
show("step deletion", lambda: s[:])
del s[1:2]
show("slice deletion", lambda: s[:])
t = m.list([1, 2])
show("add mul", lambda: (t + [3], t * 2, 2 * t, t * 0, t * -1))
show("add tuple", lambda: t + (3,))
show("mul float", lambda: t * 1.5)
t += [3]
t += (4,)
t += "xy"
show("iadd", lambda: t[:])
t *= 2
show("imul", lambda: t[:])
t *= 0
show("imul zero", lambda: (t[:], len(t)))
t *= 2 ** 40
show("imul of an empty list by a huge number", lambda: t[:])
show("reversed", lambda: list(reversed(m.list([1, 2, 3]))))
show("iterate by index", lambda: [x for x in m.list([1, 2, 3])])
srt = m.list([3, 1.5, True, -2, 10])
srt.sort()
show("sort", lambda: srt[:])
srt.sort(reverse=True)
show("sort reverse", lambda: srt[:])
show("sort mixed", lambda: m.list([1, "a"]).sort())
show("str", lambda: str(m.list([1, "it's", 2.5, None, (1,), b"x", 1e16, -0.0, float("inf")])))
show("repr", lambda: repr(m.list([{"a": [1]}]))[:1])
show("list of str", lambda: m.list("abc")[:])
show("list of dict", lambda: m.list({"k": 1, "j": 2})[:])
show("list of bytes", lambda: m.list(b"ab")[:])
show("list of set", lambda: sorted(m.list({3, 1, 2})[:]))
show("list of range", lambda: m.list(range(2, 12, 3))[:])
show("list of two", lambda: m.list([1], [2]))
show("reverse", lambda: (lambda x: (x.reverse(), x[:]))(m.list([1, 2, 3])))
show("getvalue", lambda: m.list([1, [2]])._getvalue())
show("for x in l", lambda: [x for x in m.list(["a", "b"])])
show("list(l)", lambda: list(m.list([1, 2, 3])))
def appended_while_iterating():
    g = m.list([1, 2, 3])
    seen = []
    for x in g:
        seen.append(x)
        if x == 1:
            g.append(4)
    return seen
show("appended while iterating", appended_while_iterating)
def nested():
    inner = m.dict(k="v")
    return [x if isinstance(x, int) else x.copy() for x in m.list([inner, 2])]
show("a nested proxy in a list iterated", nested)
def dropped_list_iterator():
    it = iter(m.list([5, 6, 7]))
    return next(it)
show("a list iterator dropped before the end", dropped_list_iterator)
