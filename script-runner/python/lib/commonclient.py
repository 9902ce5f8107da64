"""The old lib.commonclient: httpget, httppost and socketget, on the standard library alone.

Errors are logged (with the caller's name) and give None. HTTP: 10 s timeout, `auth` is
'user:pass' (basic), a status of 400 or more is an error. TLS certificates are verified unless
`[SelfConfig] python_tls_insecure: True` (unsafe); a verification failure names that key.
socketget reads the whole answer (until the peer closes, a quiet second, or an answer known to be
complete such as Redis INFO), where the old one read once and cut long answers.
"""

import base64
import socket
import ssl
import urllib.error
import urllib.request

import lib._runtime as _runtime

TIMEOUT = 10
INSECURE_KEY = '[SelfConfig] python_tls_insecure'


def _insecure():
    return _runtime.config.get('SelfConfig', {}).get('python_tls_insecure', 'False').lower() in ('true', 'yes', '1', 'on')


def _context():
    if _insecure():
        return ssl._create_unverified_context()
    return ssl.create_default_context()


def _request(name, url, auth, headers, payload):
    request = urllib.request.Request(url, data=payload)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    if auth:
        token = base64.b64encode(auth.encode('utf-8')).decode('ascii')
        request.add_header('Authorization', 'Basic ' + token)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=_context()) as response:
            return response.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as e:
        _runtime.log('error', '%s: %s answered HTTP %s' % (name, url, e.code))
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            _runtime.log('error', '%s: %s: certificate not verified (%s); set %s = True to skip the check (unsafe)'
                         % (name, url, reason.verify_message, INSECURE_KEY))
        else:
            _runtime.log('error', '%s: %s: %s' % (name, url, reason))
    except (OSError, ValueError) as e:
        _runtime.log('error', '%s: %s: %s' % (name, url, e))
    return None


def httpget(name, url, auth=None, headers=None):
    return _request(name, url, auth, headers, None)


def httppost(name, url, auth=None, headers=None, payload=None):
    if isinstance(payload, str):
        payload = payload.encode('utf-8')
    return _request(name, url, auth, headers, payload if payload is not None else b'')


def _complete(data):
    # Redis INFO: "$<len>\r\n<body>\r\n".
    if data.startswith(b'$'):
        head, _, rest = data.partition(b'\r\n')
        try:
            return len(rest) >= int(head[1:]) + 2
        except ValueError:
            return False
    # memcached stats and friends end with END; Redis simple replies with one line.
    return data.endswith(b'END\r\n') or (data[:1] in (b'+', b'-', b':') and data.endswith(b'\r\n'))


def socketget(name, bufsize, host, port, message):
    try:
        s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    except (OSError, ValueError) as e:
        _runtime.log('error', '%s: cannot connect to %s:%s: %s' % (name, host, port, e))
        return None
    try:
        if isinstance(message, str):
            message = message.encode('utf-8')
        s.sendall(message)
        chunks = []
        data = b''
        s.settimeout(TIMEOUT)
        while True:
            chunk = s.recv(max(int(bufsize), 4096))
            if not chunk:
                break
            chunks.append(chunk)
            data = b''.join(chunks)
            if _complete(data):
                break
            s.settimeout(1.0)
        return data.decode('utf-8', 'replace')
    except socket.timeout:
        if chunks:
            return b''.join(chunks).decode('utf-8', 'replace')
        _runtime.log('error', '%s: %s:%s sent nothing in %s s' % (name, host, port, TIMEOUT))
    except OSError as e:
        _runtime.log('error', '%s: %s:%s: %s' % (name, host, port, e))
    finally:
        s.close()
    return None
