"""The old lib.basecheck: `class Check(lib.basecheck.CheckBase)` with a precheck() that appends
dicts to self.local_vars. A new Check() is made every cycle and its runcheck() called; the host
ships what it returns."""

import lib._runtime as _runtime
import lib.getconfig
import lib.pushdata
import lib.puylogger
import lib.record_rate


def _self(key):
    return _runtime.config.get('SelfConfig', {}).get(key, '')


class CheckBase(object):
    check_type = 'base'
    values_type = 'none'
    local_vars = []
    rate = lib.record_rate.ValueRate()
    last = lib.record_rate.GetPrevValue()
    jsondata = lib.pushdata.JonSon()
    metrics = []
    error_handler = 0

    def __init__(self):
        self.cluster_name = _self('cluster_name')
        self.host_group = _self('host_group')
        self.location = _self('location')
        self.timestamp = _runtime.tick
        self.local_vars = _runtime.PointList()

    def info(self):
        for t in self.local_vars:
            lib.puylogger.print_message(self.__module__ + ' : ' + str(t))

    def precheck(self):
        pass

    def runcheck(self):
        self.local_vars = _runtime.PointList()
        self.precheck()
        for k in self.local_vars:
            if isinstance(k, dict) and 'host' not in k:
                k['host'] = lib.pushdata.hostname
        return self.local_vars
