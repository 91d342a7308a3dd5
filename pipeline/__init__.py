"""teaprint: identify an individual tea cake from a photo."""

import os

# TensorFlow's C++ start-up chatter would bury our own log lines on stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
