"""Run one of TF-Agents' own test modules as a script, with ``reverb`` -> ``replaydb.reverb``.

Usage: ``python tests_tf/run_upstream.py tf_agents.replay_buffers.reverb_replay_buffer_test``
(extra arguments go to the test's absltest main, e.g. ``--test_filter=...``).
"""

from __future__ import annotations

import runpy
import sys

import replaydb.reverb

if __name__ == "__main__":
    replaydb.reverb.install(replace_existing="--replace-existing" in sys.argv)
    args = [a for a in sys.argv[1:] if a != "--replace-existing"]
    module = args[0]
    sys.argv = [module, *args[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
