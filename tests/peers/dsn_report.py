#!/usr/bin/python3
"""Parses a delivery status notification with Python's email package (the
parser most mail software leans on) and prints what it found as JSON:

  {"content_type", "report_type", "from", "to", "subject", "auto_submitted",
   "parts": [content types], "message": {per-message fields},
   "recipients": [{per-recipient fields}], "returned": {"type", "subject",
   "body"}}

Exits 1 with a reason on stderr if the message is not a multipart/report.
"""
import email
import email.policy
import json
import sys


def fields(block):
    return {k: str(v) for k, v in block.items()}


def main():
    with open(sys.argv[1], "rb") as f:
        m = email.message_from_binary_file(f, policy=email.policy.compat32)
    if m.get_content_type() != "multipart/report":
        sys.exit("not a multipart/report: %s" % m.get_content_type())
    parts = m.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    if len(status) != 1:
        sys.exit("expected one message/delivery-status part, got %d" % len(status))
    blocks = status[0].get_payload()
    returned = {}
    if len(parts) > 2:
        r = parts[2]
        returned["type"] = r.get_content_type()
        if r.get_content_type() == "message/rfc822":
            inner = r.get_payload()[0]
            returned["subject"] = inner["Subject"]
            returned["body"] = inner.get_payload()
        else:
            returned["body"] = r.get_payload(decode=True).decode("ascii", "replace")
    print(json.dumps({
        "content_type": m.get_content_type(),
        "report_type": m.get_param("report-type"),
        "from": m["From"],
        "to": m["To"],
        "subject": m["Subject"],
        "auto_submitted": m["Auto-Submitted"],
        "parts": [p.get_content_type() for p in parts],
        "message": fields(blocks[0]),
        "recipients": [fields(b) for b in blocks[1:]],
        "returned": returned,
    }))


if __name__ == "__main__":
    main()
