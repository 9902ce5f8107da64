"""The old lib.record_rate, without its false data.

ValueRate.record_value_rate(key, value, ts) returns a RateValue: shipped, it becomes a point of
check style `rate` carrying the counter itself, and the shipper, which owns rate state (so that it
survives a restart of the runner or of this host), sends the per-second rate from the second sample
on, and nothing for a first sample or a counter that went backwards (the old code sent 0.0 and 1.0).

Modules do arithmetic on the returned value. Scaling keeps it a counter the shipper can turn into a
rate (`r * 8`, `r / 1024`, `-r`, `round(r, 2)`, the sum or difference of two rates). Anything else
(int(), float(), comparisons, a ratio of two rates, adding a constant) uses the rate this host
computes itself from the same samples, kept in the state file so that it survives a restart too;
where that is not known yet (a first sample) the result is a value that is not sent (no point),
comparisons are False, int() and float() give 0: none of them raises. That 0 is counted for the
module's cycle, and a point of value 0 the module makes after it is not sent (lib._runtime.Collector):
`int(rate)` shipped on a first sample gives no point, not a false 0.

record_value_delta(key, value) and GetPrevValue.return_last_value(key, value) are computed here
(no point for a first sample, or a delta that went negative). The state file also keeps
lib.sharedvars' values that JSON can hold: a host restarted after a hang or a crash goes on
where it stopped.
"""

import json
import os
import threading

import lib._runtime as _runtime

_lock = threading.Lock()
_save_lock = threading.Lock()
# key -> [value, timestamp] of the last sample: the host's own copy, for coercions.
last_value = {}
prev_value = {}
_delta_last = {}
state_file = None


def load_state(path):
    """Reads the state a previous host left (a missing or broken file is a fresh start)."""
    global state_file
    state_file = path
    try:
        with open(path) as f:
            data = json.load(f)
        last_value.update({k: tuple(v) for k, v in data.get('rate', {}).items()})
        _delta_last.update(data.get('delta', {}))
        prev_value.update(data.get('prev', {}))
        import lib.sharedvars
        lib.sharedvars.last_value.update(data.get('shared', {}))
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def save_state():
    if not state_file:
        return
    import lib.sharedvars
    with _lock:
        data = {'rate': dict(last_value), 'delta': dict(_delta_last), 'prev': _plain(prev_value),
                'shared': _plain(lib.sharedvars.last_value)}
    tmp = state_file + '.tmp'
    try:
        with _save_lock:
            with open(tmp, 'w') as f:
                json.dump(data, f)
            os.replace(tmp, state_file)
    except (OSError, TypeError, ValueError) as e:
        _runtime.log('warn', 'cannot save the rate state to %s: %s' % (state_file, e), module='')


def _plain(values):
    """The entries of `values` that JSON can hold (a connection object cannot survive a restart)."""
    kept = {}
    for key, value in list(values.items()):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[str(key)] = value
    return kept


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class RateValue(object):
    """A rate: `counter` is what is shipped (style rate), `local` the rate this host computed
    (None while unknown). A RateValue with counter None is only a local value (or nothing)."""

    __slots__ = ('counter', 'local')

    def __init__(self, counter, local):
        self.counter = counter
        self.local = local

    # --- scaling: still a counter the shipper can rate -------------------------------------
    def _scale(self, factor):
        f = _float(factor)
        if f is None:
            return NotImplemented
        counter = None if self.counter is None else self.counter * f
        local = None if self.local is None else self.local * f
        return RateValue(counter, local)

    def __mul__(self, other):
        if isinstance(other, RateValue):
            return self._other(other, lambda a, b: a * b)
        return self._scale(other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, RateValue):
            return self._other(other, lambda a, b: a / b if b else None)
        f = _float(other)
        if not f:
            return RateValue(None, None)
        return self._scale(1.0 / f)

    __floordiv__ = __truediv__

    def __rtruediv__(self, other):
        return self._plain(lambda a: _float(other) / a if a else None)

    def __neg__(self):
        return self._scale(-1)

    def __pos__(self):
        return self

    def __round__(self, ndigits=None):
        # The shipper rounds rates to 2 decimals itself.
        return self

    def __add__(self, other):
        if isinstance(other, RateValue):
            if self.counter is not None and other.counter is not None:
                return RateValue(self.counter + other.counter, _both(self.local, other.local, lambda a, b: a + b))
            return self._other(other, lambda a, b: a + b)
        return self._plain(lambda a: a + _float(other))

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, RateValue):
            return self + (-other)
        return self._plain(lambda a: a - _float(other))

    def __rsub__(self, other):
        return (-self) + other

    def __abs__(self):
        return self._plain(abs)

    # --- everything else: the locally computed rate ----------------------------------------
    def _plain(self, fn):
        if self.local is None:
            return RateValue(None, None)
        try:
            value = fn(self.local)
        except (TypeError, ValueError, ZeroDivisionError):
            return RateValue(None, None)
        return RateValue(None, value)

    def _other(self, other, fn):
        if self.local is None or other.local is None:
            return RateValue(None, None)
        value = fn(self.local, other.local)
        return RateValue(None, value)

    def __float__(self):
        return float(self.local) if self.local is not None else _runtime.no_rate_number(0.0)

    def __int__(self):
        return int(self.local) if self.local is not None else _runtime.no_rate_number(0)

    __index__ = __int__

    def __bool__(self):
        return bool(self.local)

    def _cmp(self, other, fn):
        if self.local is None:
            return False
        o = other.local if isinstance(other, RateValue) else _float(other)
        if o is None:
            return False
        return fn(self.local, o)

    def __lt__(self, o):
        return self._cmp(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._cmp(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._cmp(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._cmp(o, lambda a, b: a >= b)

    def __eq__(self, o):
        return self._cmp(o, lambda a, b: a == b)

    def __ne__(self, o):
        return not self.__eq__(o)

    __hash__ = None

    def __format__(self, spec):
        return format(self.local, spec) if self.local is not None else 'None'

    def __repr__(self):
        return 'RateValue(counter=%r, local=%r)' % (self.counter, self.local)

    __str__ = __repr__


def _both(a, b, fn):
    return None if a is None or b is None else fn(a, b)


class ValueRate(object):
    metrics_value_rate = 0.0

    def __init__(self):
        self.metrics_value_rate = 0.0

    def record_value_rate(self, mytype, myvalue, timestamp):
        value = _float(myvalue)
        if value is None:
            # Not a counter: shipped as it is, so that the data rules log it once and count it.
            return myvalue
        try:
            ts = int(timestamp)
        except (TypeError, ValueError):
            ts = _runtime.tick
        with _lock:
            previous = last_value.get(mytype)
            last_value[mytype] = (value, ts)
        local = None
        if previous is not None and ts > previous[1] and value >= previous[0]:
            local = round((value - previous[0]) / (ts - previous[1]), 2)
        return RateValue(value, local)

    def update_timestamp(self, timestamp):
        pass

    def record_value_delta(self, mytype, myvalue):
        return record_value_delta(mytype, myvalue)


def record_value_delta(mytype, myvalue):
    """The increase since the last call; not sent for a first sample or when it went down."""
    value = _float(myvalue)
    if value is None:
        return myvalue
    with _lock:
        previous = _delta_last.get(mytype)
        _delta_last[mytype] = value
    if previous is None or value < previous:
        return RateValue(None, None)
    delta = value - previous
    return int(delta) if delta == int(delta) and isinstance(myvalue, int) else delta


class GetPrevValue(object):
    metrics_last_value = 0.0

    def __init__(self):
        self.metrics_last_value = 0.0

    def return_last_value(self, mytype, myvalue):
        """The value given at the previous call with this key; the first call gives a value
        that is not sent (the old code returned 0.0, false data)."""
        with _lock:
            previous = prev_value.get(mytype)
            prev_value[mytype] = myvalue
        if previous is None:
            return RateValue(None, None)
        return previous
