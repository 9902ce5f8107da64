"""The old lib.puylogger: print_message and print_raw_message write to the agent's log (the
script-runner's log lines, with the module's name)."""

import lib._runtime as _runtime

debug_log = False


def _text(args):
    return ' '.join(str(a) for a in args)


def print_message(*args):
    _runtime.log('info', _text(args))


def print_raw_message(*args):
    _runtime.log('info', _text(args))
