"""TensorFlow tests of replaydb.reverb: ``reverb`` resolves to replaydb.reverb here.

Run with ``scripts/test_tf.sh`` (it builds the TensorFlow environment). The alias
is installed before anything imports TF-Agents; a real dm-reverb in the same
environment is replaced only when ``REPLAYDB_REVERB_REPLACE=1``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import replaydb.reverb

replaydb.reverb.install(replace_existing=os.environ.get("REPLAYDB_REVERB_REPLACE") == "1")
