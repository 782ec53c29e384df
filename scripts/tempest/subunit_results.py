"""Reads a subunit v2 stream (stdin) of a tempest run and writes one JSON object per line (stdout):
{"id": ..., "status": "success|fail|skip|...", "details": "traceback or skip reason"}.

Run with Debian's /usr/bin/python3 (python3-subunit and python3-testtools come with tempest).
Class-level results come out under ids like "setUpClass (tempest.api.image.v2.test_x.SomeTest)".
"""
import json
import sys

import subunit
import testtools

MAX_DETAIL = 8000


def main():
    records = []

    def on_test(test):
        details = []
        for name, content in sorted(test.get('details', {}).items()):
            # pythonlogging duplicates tempest.log; keep tracebacks and skip reasons.
            if name in ('pythonlogging', 'pythonlogging:\'\''):
                continue
            try:
                text = content.as_text()
            except Exception:  # noqa: BLE001 (binary attachments)
                continue
            if text.strip():
                details.append('%s:\n%s' % (name, text.strip()))
        body = '\n'.join(details)
        if len(body) > MAX_DETAIL:
            body = body[:MAX_DETAIL // 2] + '\n[...]\n' + body[-MAX_DETAIL // 2:]
        records.append({
            'id': test['id'],
            'status': test['status'],
            'details': body,
        })

    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name='stdout')
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()
    for record in records:
        sys.stdout.write(json.dumps(record) + '\n')


if __name__ == '__main__':
    main()
