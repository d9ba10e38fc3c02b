#!/usr/bin/env python3
"""The logic scripts/infra.sh needs beyond orchestration, kept testable
(scripts/test_infra_helper.py, run by scripts/test.sh).

    infra_helper.py install-conf TARGET SRC BEGIN END
        Writes SRC into TARGET as a block between the marker lines BEGIN and
        END: creates TARGET if there is none, refreshes our block if it is
        there, appends it to a foreign file otherwise (after a one-time
        backup to TARGET.taskforge.bak). Lines outside the block are never
        touched. Prints what it did.

    infra_helper.py check-queues DEFINITIONS LIVE_JSON
        Compares the queues of a RabbitMQ definitions file with the live
        listing (JSON from GET /api/queues/<vhost>?columns=name,arguments)
        and prints one line per queue that is missing or has other
        arguments; prints nothing when all match.

Standard library only: it runs on a fresh Debian's python3.
"""

import json
import os
import shutil
import sys


def merge_block(old, block_text, begin, end):
    """Returns (new_text, action) for a file holding `old` (None: no file)."""
    block = begin + "\n" + block_text.rstrip("\n") + "\n" + end + "\n"
    if old is None:
        return block, "created"
    if begin in old and end in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + tail
        return new, ("kept our block (unchanged) in" if new == old else "updated our block in")
    sep = "" if old.endswith("\n") or not old else "\n"
    return old + sep + "\n" + block, "appended our block to"


def install_conf(target, src, begin, end):
    with open(src) as f:
        block_text = f.read()
    old = None
    if os.path.exists(target):
        with open(target) as f:
            old = f.read()
    new, action = merge_block(old, block_text, begin, end)
    if new == old:
        return action
    if old is None:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    elif action.startswith("appended"):
        backup = target + ".taskforge.bak"
        if not os.path.exists(backup):
            shutil.copy2(target, backup)
    tmp = target + ".taskforge.tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return action


def queue_problems(definitions, live):
    """Lines naming each defined queue that is missing from, or differs in, `live`."""
    want = {q["name"]: q.get("arguments", {}) for q in definitions.get("queues", [])}
    have = {q["name"]: q.get("arguments", {}) for q in live}
    problems = []
    for name, args in want.items():
        if name not in have:
            problems.append(f"{name} is missing")
        elif have[name] != args:
            problems.append(
                f"{name} has arguments {json.dumps(have[name], sort_keys=True)}, "
                f"expected {json.dumps(args, sort_keys=True)}"
            )
    return problems


def main(argv):
    if len(argv) == 5 and argv[0] == "install-conf":
        print(install_conf(*argv[1:5]))
        return 0
    if len(argv) == 3 and argv[0] == "check-queues":
        with open(argv[1]) as f:
            definitions = json.load(f)
        for line in queue_problems(definitions, json.loads(argv[2])):
            print(line)
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
