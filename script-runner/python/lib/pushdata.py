"""The old lib.pushdata: `hostname`, `print_error`, `JonSon` and `send_special`.

JonSon no longer talks to a backend: gen_data() collects points and put_json() hands them to the
runner (through the module's collector), which passes them to the shipper with the host's tags.
"""

import lib._runtime as _runtime

hostname = _runtime.hostname
cluster_name = _runtime.config.get('SelfConfig', {}).get('cluster_name', '')
host_group = _runtime.config.get('SelfConfig', {}).get('host_group', '')
location = _runtime.config.get('SelfConfig', {}).get('location', '')


def print_error(module, e):
    """Logs a module's error (the old one also sent it to OddEye)."""
    _runtime.log('error', '%s : %s' % (module, e))


class JonSon(object):
    def __init__(self):
        self.data = _runtime.PointList()

    def create_data(self):
        self.data = _runtime.PointList()

    prepare_data = create_data

    def truncate_data(self):
        self.data = _runtime.PointList()

    def gen_data(self, name, timestamp, value, tag_hostname, tag_type, cluster_name, reaction=0,
                 metric_type='None'):
        entry = {'name': name, 'timestamp': timestamp, 'value': value, 'check_type': tag_type,
                 'host': tag_hostname, 'cluster': cluster_name}
        if self.data is None:
            self.data = _runtime.PointList()
        self.data.append(entry)

    def gen_data_json(self, b, tag_hostname, cluster_name=None):
        entry = dict(b)
        entry.setdefault('host', tag_hostname)
        if self.data is None:
            self.data = _runtime.PointList()
        self.data.append(entry)

    def put_json(self, runscripts=True):
        """Ships what gen_data collected (the runner sends it to the shipper)."""
        target = _runtime.collector()
        data = self.data or []
        stamp_of = getattr(data, 'stamp_of', lambda entry: None)
        for entry in data:
            target.add(entry, stamp_of(entry))
        self.data = _runtime.PointList()

    def send_special(self, module, timestamp, value, error_msg, mytype, reaction=0, runscripts=True):
        """The old OddEye 'special' message: logged, not sent."""
        _runtime.log('info', 'special %s %s: %s (%s)' % (module, mytype, error_msg, value))


def send_special(module, timestamp, value, error_msg, mytype, reaction=0):
    JonSon().send_special(module, timestamp, value, error_msg, mytype, reaction)
