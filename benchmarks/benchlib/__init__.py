"""The shared parts of the benchmark harnesses (quality.py, tuned.py, options.py, adaptive.py, ...).

Run as ``python benchmarks/X.py``, a script has this folder on ``sys.path`` and imports
``benchlib.<module>``; the tests get the same through pytest's ``pythonpath``. Modules:

* `measure`: counted (and capped) model calls, the step count of an exact NFE, the RMS error;
* `problems`: the sampling problems (image-shaped Gaussian mixture, shipped digits model) and a
  run's record;
* `methods`: pndm's methods at exactly a target NFE on every grid, pf by tolerance bisection;
* `peers`: diffusers' schedulers in their own loop, ε at the ᾱ each step assumes;
* `results`: the best run per (method, NFE) and its table tag;
* `report`: quality.py's markdown and plots;
* `machine`: the name of the CPU or GPU a report ran on;
* `progress`: progress lines on stderr;
* `digits_metric`: the digits Fréchet distance of samples (`pndm fid ... digits`).
"""
