"""Unit tests of the compatibility package (python3 -m unittest discover -s tests, from
script-runner/python; run by the script-runner's `python_package_unit_tests` test)."""

import os
import sys
import tempfile
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lib._runtime as runtime  # noqa: E402

LOGGED = []
runtime.log_sink = lambda level, module, text: LOGGED.append((level, text))
runtime.config = {'SelfConfig': {'cluster_name': 'c1'}, 'Redis': {'host': 'h', 'auth': 'True', 'x': 'False',
                                                                   'port': '6379'}}
runtime.hostname = 'me.example'
runtime.tick = 1700000000

import lib.getconfig  # noqa: E402
import lib.record_rate  # noqa: E402
from lib.record_rate import RateValue, ValueRate, GetPrevValue  # noqa: E402


class DataRules(unittest.TestCase):
    def point(self, value, **extra):
        entry = {'name': 'm', 'timestamp': 1700000000, 'value': value, 'check_type': 't'}
        entry.update(extra)
        return runtime.to_point(entry)

    def test_numbers_and_numeric_text_are_sent(self):
        self.assertEqual(self.point(5)[0]['v'], 5)
        self.assertTrue(self.point(5)[0]['i'])
        self.assertEqual(self.point(2.5)[0]['v'], 2.5)
        self.assertEqual(self.point(' 42 ')[0]['v'], 42)
        self.assertEqual(self.point('1.5e3')[0]['v'], 1500.0)
        self.assertEqual(self.point(Decimal('3.25'))[0]['v'], 3.25)
        self.assertEqual(self.point(True)[0]['v'], 1)

    def test_none_text_and_nan_are_not_sent_and_say_why(self):
        self.assertEqual(self.point(None), (None, 'None'))
        self.assertEqual(self.point('n/a')[1], "text 'n/a'")
        self.assertEqual(self.point(float('nan'))[1], 'not a finite number')
        self.assertEqual(self.point('inf')[1], 'not a finite number')
        self.assertEqual(self.point([1])[1], 'a list')

    def test_tags_host_override_and_defaults(self):
        p = self.point(1, extra_tag={'db': 0, 'host': 'no'}, host='other', chart_type='Rate', reaction=-3)[0]
        self.assertEqual(p['g'], [['host', 'other'], ['db', '0']])
        self.assertEqual(self.point(1, host='me.example')[0]['g'], [])
        no_type = runtime.to_point({'name': 'm', 'value': 1})[0]
        self.assertEqual((no_type['c'], no_type['t']), ('None', 1700000000))


class Rates(unittest.TestCase):
    def setUp(self):
        lib.record_rate.last_value.clear()

    def test_a_rate_is_a_counter_for_the_shipper_and_none_for_a_first_sample(self):
        r = ValueRate().record_value_rate('k', 100, 10)
        self.assertEqual((r.counter, r.local), (100.0, None))
        p = runtime.to_point({'name': 'm', 'value': r})[0]
        self.assertEqual((p['v'], p['r'], p['i']), (100.0, True, False))
        r2 = ValueRate().record_value_rate('k', '150', 20)
        self.assertEqual(r2.local, 5.0)

    def test_arithmetic_never_raises_on_a_first_sample(self):
        r = ValueRate().record_value_rate('k', 100, 10)
        self.assertFalse(r > 0)
        self.assertFalse(r < 0)
        self.assertEqual(int(r), 0)
        self.assertEqual(float(r), 0.0)
        self.assertEqual((r / 8).counter, 12.5)
        self.assertEqual((r * 8).counter, 800.0)
        self.assertIs(round(r, 2), r)
        ratio = r / ValueRate().record_value_rate('other', 5, 10)
        self.assertEqual(runtime.to_point({'name': 'm', 'value': ratio}), (None, None))
        self.assertEqual(runtime.to_point({'name': 'm', 'value': r + 1}), (None, None))
        self.assertEqual('%s' % format(r, '.2f'), 'None')

    def test_a_counter_that_went_backwards_has_no_local_rate(self):
        ValueRate().record_value_rate('k', 100, 10)
        r = ValueRate().record_value_rate('k', 50, 20)
        self.assertIsNone(r.local)
        self.assertEqual(ValueRate().record_value_rate('k', 70, 30).local, 2.0)

    def test_delta_and_previous_value_send_nothing_first(self):
        first = lib.record_rate.record_value_delta('d', 10)
        self.assertEqual(runtime.to_point({'name': 'm', 'value': first}), (None, None))
        self.assertEqual(ValueRate().record_value_delta('d', 15), 5)
        prev = GetPrevValue()
        self.assertEqual(runtime.to_point({'name': 'm', 'value': prev.return_last_value('p', 1)}), (None, None))
        self.assertEqual(prev.return_last_value('p', 2), 1)

    def test_state_survives_a_restart_through_the_state_file(self):
        import lib.sharedvars
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'state.json')
            lib.record_rate.load_state(path)
            ValueRate().record_value_rate('s', 10, 100)
            lib.sharedvars.storevar('kept', 3)
            lib.sharedvars.storevar('dropped', object())
            lib.record_rate.save_state()
            lib.record_rate.last_value.clear()
            lib.sharedvars.last_value.clear()
            lib.record_rate.load_state(path)
            self.assertEqual(ValueRate().record_value_rate('s', 30, 110).local, 2.0)
            self.assertEqual(lib.sharedvars.getvar('kept'), 3)
            self.assertNotIn('dropped', lib.sharedvars.last_value)


class NoFalseZero(unittest.TestCase):
    """int() and float() of a rate not known yet give 0; a point made from them is not sent
    (regression: the module shipped that 0 as if the rate were 0)."""

    def setUp(self):
        lib.record_rate.last_value.clear()
        runtime.current.collector = runtime.Collector('check_t')

    def tearDown(self):
        runtime.current.collector = None

    def cycle(self, counter, ts, make):
        """One class-style cycle: `make(rate, local_vars)` appends the module's dicts."""
        import lib.basecheck
        collector = runtime.Collector('check_t')
        runtime.current.collector = collector

        class Check(lib.basecheck.CheckBase):
            def precheck(self):
                make(self.rate.record_value_rate('k', counter, ts), self.local_vars)

        result = Check().runcheck()
        for entry in result:
            collector.add(entry, result.stamp_of(entry))
        return [(p['n'], p['v'], p['r']) for p in collector.points]

    def entry(self, name, value):
        return {'name': name, 'timestamp': 1, 'value': value, 'check_type': 't'}

    def test_each_pattern_of_the_old_modules_gives_no_point_first_and_the_rate_then(self):
        def make(rate, out):
            out.append(self.entry('direct', rate))
            out.append(self.entry('as_int', int(rate)))
            out.append(self.entry('as_float', float(rate)))
            out.append(self.entry('kib', rate / 1024))
            out.append(self.entry('rounded', round(rate, 2)))
            out.append(self.entry('float_kib', round(float(rate) / 1024, 2)))
            if rate >= 0:
                out.append(self.entry('compared', rate))
        self.assertEqual(self.cycle(1000, 10, make), [('direct', 1000.0, True), ('kib', 1000 / 1024, True),
                                                      ('rounded', 1000.0, True)])
        self.assertEqual(self.cycle(21480, 20, make), [
            ('direct', 21480.0, True), ('as_int', 2048, False), ('as_float', 2048.0, False),
            ('kib', 21480 / 1024, True), ('rounded', 21480.0, True), ('float_kib', 2.0, False),
            ('compared', 21480.0, True)])

    def test_a_zero_made_before_the_conversion_is_sent(self):
        def make(rate, out):
            out.append(self.entry('real_zero', 0))
            value = int(rate)
            out.append(self.entry('other', 5))
            out.append(self.entry('as_int', value))
            out.append(self.entry('later_zero', 0))
        self.assertEqual(self.cycle(1000, 10, make), [('real_zero', 0, False), ('other', 5, False),
                                                      ('later_zero', 0, False)])

    def test_a_comparison_is_not_a_conversion(self):
        def make(rate, out):
            if rate > 5 or rate == 0:
                out.append(self.entry('never', 1))
            out.append(self.entry('real_zero', 0))
        self.assertEqual(self.cycle(1000, 10, make), [('real_zero', 0, False)])

    def test_function_style_gen_data_and_a_backwards_counter(self):
        import lib.pushdata
        ValueRate().record_value_rate('f', 500, 10)
        for counter, ts, expected in ((100, 20, []), (300, 30, [('f', 20, False)])):
            collector = runtime.Collector('check_t')
            runtime.current.collector = collector
            jsondata = lib.pushdata.JonSon()
            jsondata.create_data()
            rate = ValueRate().record_value_rate('f', counter, ts)
            jsondata.gen_data('f', ts, int(rate), 'me.example', 't', '')
            jsondata.put_json()
            self.assertEqual([(p['n'], p['v'], p['r']) for p in collector.points], expected)


class GetConfig(unittest.TestCase):
    def test_getparam_booleans_strings_and_missing_keys(self):
        self.assertIs(lib.getconfig.getparam('Redis', 'auth'), True)
        self.assertIs(lib.getconfig.getparam('Redis', 'x'), False)
        self.assertEqual(lib.getconfig.getparam('Redis', 'port'), '6379')
        self.assertEqual(lib.getconfig.getparam('Redis', 'Host'), 'h')
        with self.assertRaises(KeyError):
            lib.getconfig.getparam('Redis', 'nope')
        with self.assertRaises(KeyError):
            lib.getconfig.getparam('Nope', 'host')
        self.assertEqual(lib.getconfig.getsection('Redis'), ['host', 'auth', 'x', 'port'])
        self.assertEqual(lib.getconfig.getsectionitems('Redis')['port'], '6379')


class SocketGet(unittest.TestCase):
    def test_reads_the_whole_answer_over_several_packets(self):
        import socket
        import threading
        import lib.commonclient
        server = socket.socket()
        server.bind(('127.0.0.1', 0))
        server.listen(1)
        body = b'# Server\r\n' + b'key:value\r\n' * 2000

        def serve():
            conn, _ = server.accept()
            conn.recv(100)
            answer = b'$%d\r\n%s\r\n' % (len(body), body)
            for i in range(0, len(answer), 1000):
                conn.sendall(answer[i:i + 1000])
            conn.close()

        t = threading.Thread(target=serve)
        t.start()
        text = lib.commonclient.socketget('t', 1024, '127.0.0.1', server.getsockname()[1], 'INFO\r\n')
        t.join()
        server.close()
        self.assertEqual(text.count('key:value'), 2000)

    def test_refused_connection_gives_none_and_a_log_line(self):
        import lib.commonclient
        LOGGED.clear()
        self.assertIsNone(lib.commonclient.socketget('t', 1024, '127.0.0.1', 1, 'x'))
        self.assertIn('cannot connect to 127.0.0.1:1', LOGGED[-1][1])


if __name__ == '__main__':
    unittest.main()
