"""A real SMTP server on 127.0.0.1 for the connectors' mail test (aiosmtpd).

Usage: smtp_sink.py PORT DIR

Every message accepted is written to DIR as NNNN.eml (the bytes received, after the SMTP
envelope's sender and recipients as X-Envelope-* lines) and NNNN.json (the envelope and the
decoded From, To, Subject and plain-text body), each through a temporary file and a rename.
Prints "ready" once it listens; stops when its standard input closes.
"""

import json
import os
import sys
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = os.path.join(self.directory, "%04d" % self.count)
        content = envelope.original_content or envelope.content
        head = "X-Envelope-From: %s\r\n" % envelope.mail_from
        head += "".join("X-Envelope-To: %s\r\n" % r for r in envelope.rcpt_tos)
        msg = message_from_bytes(content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        decoded = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "body": body.get_content() if body is not None else None,
        }
        write(stem + ".eml", head.encode() + content)
        write(stem + ".json", json.dumps(decoded).encode())
        return "250 Message accepted for delivery"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
