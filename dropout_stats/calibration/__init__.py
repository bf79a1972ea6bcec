"""Measured error rates and the corpus they are measured on (``dropout-stats calibrate``).

* ``calibrate``: false alarms of ``verify()`` on correct dropout, and how often each defect of the
  corpus is caught;
* ``corpus`` (imports TensorFlow) and ``corpus_torch`` (imports torch): deliberately broken dropout
  implementations, one per defect the battery exists to catch.

Nothing here is imported by the statistics layer or the battery: it sits beside the CLI command
that uses it.
"""
