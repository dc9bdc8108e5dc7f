import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import *
import collections, dataclasses, datetime, decimal, fractions, uuid


from _types import Point, Plain


class Local:
    """A class of the script itself: CPython's server cannot import it to build it."""

    def __eq__(self, other):
        return type(other) is Local


values = [
    None, True, 0, -1, 2 ** 62, 2 ** 64, -2 ** 100, 2 ** 127, 2 ** 200, 1.5, -0.0, float("inf"),
    complex(1, -2), "text", "é\n'\"", b"\x00\xff", bytearray(b"ab"), (), (1,), [1, [2]],
    {"k": (1, 2)}, {1, 2}, frozenset({3}), set(), slice(1, 2, 3),
    datetime.datetime(2026, 12, 1, 1, 2, 3), datetime.date(2026, 1, 2),
    datetime.time(4, 5), datetime.timedelta(days=3, seconds=1),
    datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    decimal.Decimal("1.50"), fractions.Fraction(1, 3), uuid.UUID(int=2 ** 127 + 5),
    collections.OrderedDict(a=1, b=2), collections.Counter("aab"),
    collections.deque([1, 2], maxlen=5), collections.defaultdict(list, a=[1]),
    range(3), ..., Point(1, 2), Plain([1, {"a": 2}]), ValueError("boom"), int, len,
]
l = m.list()
for v in values:
    l.append(v)
back = l[:]
for i, (a, b) in enumerate(zip(back, values)):
    print("value %d: %s %s %r" % (i, type(a).__name__, type(a) is type(b) and (a == b or a != a), a))
show("count", lambda: len(back))
show("str of the list", lambda: str(m.list(values[:25])))
q = m.Queue()
for v in (Point(3, 4), 2 ** 300, {4, 5}, datetime.date(2000, 1, 1)):
    q.put(v)
show("through a queue", lambda: [q.get() for _ in range(4)])
d = m.dict()
d[Point(1, 2)] = "point"
d[datetime.date(2026, 1, 2)] = "date"
d[frozenset({1, 2})] = "frozenset"
d[2 ** 100] = "big"
d[decimal.Decimal("1.5")] = "decimal"
show("opaque keys", lambda: (d[Point(1, 2)], d[datetime.date(2026, 1, 2)], d[frozenset({2, 1})], d[2 ** 100]))
show("opaque keys len", lambda: len(d))
show("opaque keys str", lambda: str(d))
show("opaque in", lambda: (Point(1, 2) in l, l.count(datetime.date(2026, 1, 2)), l.index(fractions.Fraction(1, 3))))
show("numbers are equal", lambda: (1.0 in m.list([1]), m.list([1, 1.0, True]).count(True), m.list([2]).index(2.0)))
ns = m.Namespace(when=datetime.date(2026, 12, 2), big=2 ** 90)
show("namespace", lambda: (ns.when, ns.big))
v = m.Value("O", Point(5, 6))
show("value", lambda: v.value)
# CPython's own server must build what it stores, and cannot import a class of the
# client's __main__; this server keeps it as its pickle.
show("a class of __main__", lambda: m.list([Local()])[0] == Local())
