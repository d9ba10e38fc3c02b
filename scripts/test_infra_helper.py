"""Tests of scripts/infra_helper.py (python3 -m unittest discover -s scripts)."""

import json
import os
import tempfile
import unittest

import infra_helper

BEGIN = "# >>> taskforge >>>"
END = "# <<< taskforge <<<"


class InstallConf(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.target = os.path.join(self.dir.name, "etc", "rabbitmq.conf")
        self.src = os.path.join(self.dir.name, "src.conf")
        self.write(self.src, "consumer_timeout = 1000\n")

    def write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def install(self):
        return infra_helper.install_conf(self.target, self.src, BEGIN, END)

    def test_creates_the_file_and_its_folder(self):
        self.assertEqual(self.install(), "created")
        self.assertEqual(self.read(self.target), f"{BEGIN}\nconsumer_timeout = 1000\n{END}\n")
        self.assertEqual(os.stat(self.target).st_mode & 0o777, 0o644)

    def test_a_second_run_changes_nothing(self):
        self.install()
        before = os.stat(self.target).st_mtime_ns
        self.assertEqual(self.install(), "kept our block (unchanged) in")
        self.assertEqual(os.stat(self.target).st_mtime_ns, before)

    def test_updates_our_block_and_keeps_the_lines_around_it(self):
        self.write(self.target, f"a = 1\n{BEGIN}\nconsumer_timeout = 5\n{END}\nb = 2\n")
        self.assertEqual(self.install(), "updated our block in")
        self.assertEqual(
            self.read(self.target), f"a = 1\n{BEGIN}\nconsumer_timeout = 1000\n{END}\nb = 2\n"
        )
        self.assertFalse(os.path.exists(self.target + ".taskforge.bak"))

    def test_appends_to_a_foreign_file_after_one_backup(self):
        self.write(self.target, "listeners.tcp.default = 5673")  # no final newline
        self.assertEqual(self.install(), "appended our block to")
        self.assertEqual(
            self.read(self.target),
            f"listeners.tcp.default = 5673\n\n{BEGIN}\nconsumer_timeout = 1000\n{END}\n",
        )
        self.assertEqual(self.read(self.target + ".taskforge.bak"), "listeners.tcp.default = 5673")
        # The backup is the user's file, not overwritten by a later append.
        self.write(self.target, "other = 1\n")
        self.install()
        self.assertEqual(self.read(self.target + ".taskforge.bak"), "listeners.tcp.default = 5673")

    def test_an_end_marker_before_the_begin_marker_is_not_a_block(self):
        self.write(self.target, f"{END}\nx = 1\n{BEGIN}\n")
        self.assertEqual(self.install(), "appended our block to")
        self.assertTrue(self.read(self.target).startswith(f"{END}\nx = 1\n{BEGIN}\n\n{BEGIN}\n"))


class QueueProblems(unittest.TestCase):
    DEFS = {
        "queues": [
            {"name": "tasks.algo", "arguments": {"x-max-priority": 10}},
            {"name": "tasks.dead", "arguments": {}},
        ]
    }

    def test_matching_queues_give_no_problem(self):
        live = [
            {"name": "tasks.algo", "arguments": {"x-max-priority": 10}},
            {"name": "tasks.dead", "arguments": {}},
            {"name": "someone.else", "arguments": {"x": 1}},
        ]
        self.assertEqual(infra_helper.queue_problems(self.DEFS, live), [])

    def test_missing_and_different_queues_are_named(self):
        live = [{"name": "tasks.algo", "arguments": {}}]
        self.assertEqual(
            infra_helper.queue_problems(self.DEFS, live),
            [
                'tasks.algo has arguments {}, expected {"x-max-priority": 10}',
                "tasks.dead is missing",
            ],
        )

    def test_a_queue_listed_without_arguments_counts_as_empty(self):
        live = [{"name": "tasks.algo", "arguments": {"x-max-priority": 10}}, {"name": "tasks.dead"}]
        self.assertEqual(infra_helper.queue_problems(self.DEFS, live), [])

    def test_the_command_line_prints_one_line_per_problem(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(self.DEFS, f)
        self.addCleanup(os.unlink, f.name)
        with tempfile.TemporaryFile("w+") as out:
            import contextlib

            with contextlib.redirect_stdout(out):
                rc = infra_helper.main(["check-queues", f.name, "[]"])
            out.seek(0)
            self.assertEqual(rc, 0)
            self.assertEqual(out.read().splitlines(), ["tasks.algo is missing", "tasks.dead is missing"])


if __name__ == "__main__":
    unittest.main()
