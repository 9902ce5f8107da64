"""The Python host of PuyPuy's script-runner: loads the old agent's check modules
(checks_enabled/check_*.py) and runs them each cycle, in one process for all of them.

Protocol with the runner (one JSON object per line):
  runner -> host, on stdin:  {"cmd": "init", "config": {...}, "hostname": ..., "checks_dir": ...,
                              "state_file": ..., "import_timeout": s, "skip": [module names]}
                             {"cmd": "cycle", "tick": T}
                             {"cmd": "ping", "id": N}
  host -> runner, on the protocol descriptor (the original stdout):
                             {"ev": "loaded", "module": M, "style": "class"|"function"}
                             {"ev": "import_error", "module": M, "file": F, "reason": R}
                             {"ev": "ready"}
                             {"ev": "result", "module": M, "tick": T, "points": [...],
                              "dropped": [[name, why]], "error": null|text, "seconds": s}
                             {"ev": "result", ..., "still_running": true, "cpu": s}
                             {"ev": "pong", "id": N, "busy": [[module, cpu seconds]]}
                             {"ev": "log", "level": L, "module": M, "text": X}
Descriptor 1 is pointed at descriptor 2 before any module is imported, and sys.stdout/sys.stderr
are replaced by writers that turn what a module prints into "log" events: nothing a module prints
can reach the protocol. Each module's cycle runs in a thread of its own, so a slow one never delays
the others' results, and the main thread never waits for them: it answers a ping at once, and a
module whose thread has not ended is not started again (its result says still_running). Python
threads cannot be stopped, so a hung module's thread is left to end on its own; the runner restarts
this process only when it does not answer, when a hung thread burns CPU (the CPU seconds of each
busy thread are in the pong and in still_running results), or when most modules hang.
"""

import datetime
import importlib.util
import io
import json
import os
import socket
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))

_proto_lock = threading.Lock()
_proto = None


def send(event):
    line = json.dumps(event, separators=(',', ':'), default=str) + '\n'
    with _proto_lock:
        _proto.write(line.encode('utf-8'))
        _proto.flush()


class LogWriter(io.TextIOBase):
    """sys.stdout / sys.stderr for modules: each line becomes a log event with the module's name."""

    def __init__(self, level):
        self.level = level
        self.buffers = threading.local()

    def writable(self):
        return True

    def write(self, text):
        pending = getattr(self.buffers, 'text', '') + str(text)
        *lines, rest = pending.split('\n')
        self.buffers.text = rest
        for line in lines:
            if line.strip():
                _log(self.level, None, line)
        return len(text)

    def flush(self):
        rest = getattr(self.buffers, 'text', '')
        if rest.strip():
            _log(self.level, None, rest)
        self.buffers.text = ''


def _log(level, module, text):
    import lib._runtime as runtime
    if module is None:
        module = runtime.current_module()
    send({'ev': 'log', 'level': level, 'module': module, 'text': str(text)[:4000]})


class _Config(object):
    """`config` for the old README's modules (`config.get('SelfConfig', 'cluster_name')`)."""

    def get(self, section, key, *args, **kwargs):
        import lib.getconfig
        value = lib.getconfig.getsectionitems(section).get(key.lower())
        if value is None:
            if 'fallback' in kwargs:
                return kwargs['fallback']
            raise KeyError('[%s] %s: missing in the configuration' % (section, key))
        return value

    def getboolean(self, section, key, *args, **kwargs):
        return str(self.get(section, key, *args, **kwargs)).lower() in ('1', 'yes', 'true', 'on')

    def getint(self, section, key, *args, **kwargs):
        return int(self.get(section, key, *args, **kwargs))

    def has_section(self, section):
        import lib._runtime as runtime
        return section in runtime.config

    def has_option(self, section, key):
        import lib._runtime as runtime
        return key.lower() in runtime.config.get(section, {})


def _reason(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = ''
    for frame in reversed(tb):
        if not frame.filename.startswith(HERE):
            where = ' (%s line %s)' % (os.path.basename(frame.filename), frame.lineno)
            break
    text = '%s: %s' % (type(exc).__name__, exc)
    return text.strip() + where


class Module(object):
    def __init__(self, name, path, module):
        self.name = name
        self.path = path
        self.module = module
        self.check = getattr(module, 'Check', None)
        if not isinstance(self.check, type):
            self.check = None
        self.functions = sorted(n for n in dir(module) if n.startswith('run_') and callable(getattr(module, n)))
        self.thread = None
        # Set when a cycle is started, cleared once its result is sent, both under `lock`: a
        # thread that sent its result but has not ended yet is not busy (is_alive() would say it
        # is, and the next cycle would be answered "still running" for a module already done).
        self.running = False
        self.lock = threading.Lock()

    def cpu_seconds(self):
        """CPU time of this module's running thread (Linux: /proc/self/task/TID/stat), or 0."""
        tid = getattr(self.thread, 'native_id', None)
        if tid is None:
            return 0.0
        try:
            with open('/proc/self/task/%d/stat' % tid) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / float(os.sysconf('SC_CLK_TCK'))
        except (OSError, ValueError, IndexError):
            return 0.0

    def busy(self):
        with self.lock:
            return self.running

    def claim(self):
        """Marks a cycle started; False when the previous one has not sent its result yet."""
        with self.lock:
            if self.running:
                return False
            self.running = True
            return True

    @property
    def style(self):
        return 'class' if self.check is not None else 'function'

    def run(self, tick):
        import lib._runtime as runtime
        collector = runtime.Collector(self.name)
        runtime.current.collector = collector
        started = time.monotonic()
        error = None
        try:
            if self.check is not None:
                check = self.check()
                try:
                    result = check.runcheck()
                except BaseException:
                    # What precheck appended before it raised is still sent.
                    result = getattr(check, 'local_vars', None)
                    raise
                finally:
                    stamp_of = getattr(result, 'stamp_of', lambda entry: None)
                    for entry in result if isinstance(result, list) else []:
                        if isinstance(entry, dict):
                            entry.setdefault('host', runtime.hostname)
                        collector.add(entry, stamp_of(entry))
            else:
                for fn in self.functions:
                    getattr(self.module, fn)()
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: the host stays
            error = _reason(e)
        # Saved as each module ends: a host killed for another module's hang loses nothing.
        import lib.record_rate
        lib.record_rate.save_state()
        with self.lock:
            send({'ev': 'result', 'module': self.name, 'tick': tick, 'points': collector.points,
                  'dropped': collector.dropped, 'error': error, 'seconds': time.monotonic() - started})
            self.running = False


def _import(name, path, box):
    import lib._runtime as runtime
    runtime.current.collector = runtime.Collector(name)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # What the old README's examples use without importing it.
        for key, value in (('os', os), ('sys', sys), ('socket', socket), ('datetime', datetime),
                           ('time', time), ('config', _Config())):
            module.__dict__.setdefault(key, value)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        box.append(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        box.append(e)


def load_modules(checks_dir, timeout, skip):
    modules = []
    try:
        names = sorted(os.listdir(checks_dir))
    except OSError as e:
        _log('warn', '', 'cannot read the checks folder %s: %s; no Python modules run' % (checks_dir, e))
        return modules
    for filename in names:
        if not (filename.startswith('check_') and filename.endswith('.py')):
            continue
        name = filename[:-3]
        path = os.path.join(checks_dir, filename)
        if name in skip:
            continue
        if not os.path.isfile(path):
            send({'ev': 'import_error', 'module': name, 'file': path, 'reason': 'a broken link'})
            continue
        box = []
        t = threading.Thread(target=_import, args=(name, path, box), name='import-' + name, daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            send({'ev': 'import_error', 'module': name, 'file': path,
                  'reason': 'import still running after %s s (a network call at import?)' % timeout})
            continue
        if isinstance(box[0], BaseException):
            send({'ev': 'import_error', 'module': name, 'file': path, 'reason': _reason(box[0])})
            continue
        m = Module(name, path, box[0])
        if m.check is None and not m.functions:
            send({'ev': 'import_error', 'module': name, 'file': path,
                  'reason': 'defines neither a class Check nor a run_* function'})
            continue
        modules.append(m)
        send({'ev': 'loaded', 'module': name, 'style': m.style})
    return modules


def alias_lib():
    """`import lib.pushdata` and `__import__('pushdata')` (the lib folder on sys.path) must give
    the same module objects: one rate state, one sharedvars."""
    import lib.basecheck
    import lib.commonclient
    import lib.getconfig
    import lib.pushdata
    import lib.puylogger
    import lib.record_rate
    import lib.sharedvars
    for short in ('basecheck', 'commonclient', 'getconfig', 'pushdata', 'puylogger', 'record_rate', 'sharedvars'):
        sys.modules[short] = sys.modules['lib.' + short]


def main():
    global _proto
    # The protocol keeps the original stdout; descriptor 1 then points at stderr (the log), so
    # that even a C extension's printf cannot write into the protocol.
    _proto = os.fdopen(os.dup(1), 'wb', buffering=0)
    os.dup2(2, 1)
    sys.stdout = LogWriter('info')
    sys.stderr = LogWriter('warn')
    sys.path.insert(0, HERE)
    sys.path.insert(1, os.path.join(HERE, 'lib'))
    import lib._runtime as runtime
    runtime.log_sink = _log
    stdin = sys.__stdin__.buffer
    init = json.loads(stdin.readline())
    runtime.config = init['config']
    runtime.hostname = init['hostname']
    runtime.tick = int(time.time())
    import lib.puylogger
    lib.puylogger.debug_log = bool(init.get('debug', False))
    alias_lib()
    import lib.record_rate
    lib.record_rate.load_state(init.get('state_file'))
    modules = load_modules(init['checks_dir'], float(init.get('import_timeout', 5)), set(init.get('skip', [])))
    send({'ev': 'ready'})
    for line in stdin:
        command = json.loads(line)
        if command.get('cmd') == 'ping':
            send({'ev': 'pong', 'id': command.get('id', 0),
                  'busy': [[m.name, m.cpu_seconds()] for m in modules if m.busy()]})
            continue
        if command.get('cmd') != 'cycle':
            continue
        tick = int(command['tick'])
        runtime.tick = tick
        for m in modules:
            if not m.claim():
                send({'ev': 'result', 'module': m.name, 'tick': tick, 'points': [], 'dropped': [],
                      'error': None, 'still_running': True, 'cpu': m.cpu_seconds(), 'seconds': 0})
                continue
            m.thread = threading.Thread(target=m.run, args=(tick,), name=m.name, daemon=True)
            m.thread.start()


if __name__ == '__main__':
    try:
        main()
    except BrokenPipeError:
        pass
