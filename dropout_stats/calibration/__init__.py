"""Measured error rates and the corpus they are measured on (``dropout-stats calibrate``).

* ``target``: what a calibration runs (``Spec``) and one run as a record (the Dask task);
* ``distributed``: executing the runs, serially or on Dask distributed;
* ``store``: the SQLite store a calibration resumes from;
* ``analysis``: false alarms with their Clopper-Pearson bound, each check's p-values against
  uniform;
* ``calibrate``: false alarms of ``verify()`` on correct TensorFlow dropout (the original serial
  measurement), and how often each defect of the corpus is caught;
* ``corpus`` (imports TensorFlow) and ``corpus_torch`` (imports torch): deliberately broken dropout
  implementations, one per defect the battery exists to catch.

Nothing here is imported by the statistics layer or the battery: it sits beside the CLI command
that uses it.
"""
