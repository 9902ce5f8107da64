"""The old lib.getconfig, reading the configuration the agent itself read (config.ini and
conf.d/*.ini, merged by the runner): getparam, getsection, getsectionitems."""

import lib._runtime as _runtime


def _section(section):
    try:
        return _runtime.config[section]
    except KeyError:
        raise KeyError('no section [%s] in the configuration' % section)


def getparam(section, key):
    """The value of `key` in `section`: the exact strings True and False become booleans, every
    other value stays a string. A missing section or key raises KeyError."""
    values = _section(section)
    lowered = key.lower()
    if lowered not in values:
        raise KeyError('[%s] %s: missing in the configuration' % (section, key))
    value = values[lowered]
    if value == 'True':
        return True
    if value == 'False':
        return False
    return value


def getsection(section):
    """The keys of `section`."""
    return list(_section(section).keys())


def getsectionitems(section):
    """`section` as a dict of key -> value (strings)."""
    return dict(_section(section))
