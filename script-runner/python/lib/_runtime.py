"""What the compatibility modules share with the host: the configuration the agent read, the host
name, the cycle's time, where a thread's points go, and the conversion of a module's values into
points (the data rules of README "Python check modules").

The host (puypuy_host.py) fills `config`, `hostname` and `tick` before any module is imported.
Each module runs in a thread of its own; `current` holds that thread's `Collector`, so that
JonSon.put_json() and puylogger know which module they serve.
"""

import math
import threading

# section -> {key: value}, as the agent read config.ini and conf.d/*.ini (keys lower-cased).
config = {}
hostname = ''
# The cycle's aligned unix time (seconds).
tick = 0
# Where log lines go: a function (level, module, text); the host sets it.
log_sink = None

current = threading.local()


def log(level, text, module=None):
    if module is None:
        module = current_module()
    if log_sink is not None:
        log_sink(level, module, text)


def current_module():
    collector = getattr(current, 'collector', None)
    return collector.module if collector is not None else ''


class Collector(object):
    """The points one module made in one cycle, and the values it gave that are not sent.

    int() and float() of a rate not known yet (a first sample, a counter that went backwards) must
    give a number, and Python makes that an exact int or float, so it cannot carry a mark: they
    give 0 and count the call here (`no_rate_numbers`). A point whose value is 0 made after such a
    call (`stamp`: the count when the point was made) is then not sent, one per call: `int(rate)`,
    `float(rate) / 1024` and `round(float(rate), 2)` are all 0. A zero made before the call is sent.
    """

    def __init__(self, module):
        self.module = module
        self.points = []
        self.dropped = []  # (metric name, why)
        self.no_rate_numbers = 0
        self._used = 0
        self.first_samples = 0

    def add(self, entry, stamp=None):
        point, why = to_point(entry)
        if point is not None:
            if stamp is None:
                stamp = self.no_rate_numbers
            if point['v'] == 0 and not point['r'] and stamp > self._used:
                self._used += 1
                self.first_samples += 1
                return
            self.points.append(point)
        elif why is not None:
            self.dropped.append((str(entry.get('name', '')), why))
        else:
            self.first_samples += 1


class PointList(list):
    """CheckBase.local_vars: a list that notes, for each dict appended, how many no-rate numbers
    its module had made by then (see Collector)."""

    def __init__(self, *args):
        list.__init__(self, *args)
        self.stamps = {}
        for entry in self:
            self._stamp(entry)

    def _stamp(self, entry):
        self.stamps[id(entry)] = collector().no_rate_numbers

    def append(self, entry):
        self._stamp(entry)
        list.append(self, entry)

    def insert(self, index, entry):
        self._stamp(entry)
        list.insert(self, index, entry)

    def extend(self, entries):
        entries = list(entries)
        for entry in entries:
            self._stamp(entry)
        list.extend(self, entries)

    def __iadd__(self, entries):
        self.extend(entries)
        return self

    def stamp_of(self, entry):
        return self.stamps.get(id(entry))


def no_rate_number(zero):
    """int() or float() of a rate not known yet: counted for this thread's module, and 0."""
    collector().no_rate_numbers += 1
    return zero


def collector():
    c = getattr(current, 'collector', None)
    if c is None:
        # A thread the module started itself: its points still count, under an empty name.
        c = Collector('')
        current.collector = c
    return c


class NotReady(object):
    """Marker for 'no value this cycle' (a rate's first sample): such a point is not sent."""


def number(value):
    """(value, is_int) for what a module gave as a value, or (None, why) when it is not a number."""
    if isinstance(value, bool):
        return int(value), True
    if isinstance(value, int):
        return value, True
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else (None, 'not a finite number')
    if value is None:
        return None, 'None'
    if isinstance(value, bytes):
        try:
            value = value.decode('utf-8')
        except UnicodeDecodeError:
            return None, 'bytes that are not text'
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text), True
        except ValueError:
            pass
        try:
            f = float(text)
        except ValueError:
            return None, 'text %r' % value[:40]
        return (f, False) if math.isfinite(f) else (None, 'not a finite number')
    try:
        f = float(value)  # Decimal (pymysql), numpy numbers, …
    except (TypeError, ValueError):
        return None, 'a %s' % type(value).__name__
    return (f, False) if math.isfinite(f) else (None, 'not a finite number')


def to_point(entry):
    """A module's dict -> (point for the runner, None), or (None, why) when it is not sent, or
    (None, None) when it is silently not sent (a rate's first sample)."""
    from lib.record_rate import RateValue
    if not isinstance(entry, dict):
        return None, 'not a dict but a %s' % type(entry).__name__
    name = entry.get('name')
    if not isinstance(name, str) or not name.strip():
        return None, 'no name'
    value = entry.get('value')
    rate = False
    if isinstance(value, RateValue):
        if value.counter is None:
            return None, None
        value, rate = value.counter, True
    v, is_int = number(value)
    if v is None:
        return None, is_int
    if rate:
        v, is_int = float(v), False
    ts = entry.get('timestamp', tick)
    try:
        ts = int(ts)
    except (TypeError, ValueError):
        return None, 'timestamp %r is not a number' % (ts,)
    if ts <= 0:
        ts = tick
    tags = []
    host = entry.get('host')
    if host is not None and str(host) != hostname and str(host) != '':
        tags.append(['host', str(host)])
    extra = entry.get('extra_tag')
    if isinstance(extra, dict):
        for k, val in extra.items():
            if str(k) and str(val) and str(k) not in ('host', 'type'):
                tags.append([str(k), str(val)])
    cluster = entry.get('cluster')
    if cluster is not None and str(cluster) and str(cluster) != config.get('SelfConfig', {}).get('cluster_name', ''):
        tags.append(['cluster', str(cluster)])
    check_type = entry.get('check_type')
    check_type = 'None' if check_type is None else str(check_type)
    return {'n': name.strip(), 't': ts, 'v': v, 'i': is_int, 'c': check_type, 'r': rate, 'g': tags}, None
