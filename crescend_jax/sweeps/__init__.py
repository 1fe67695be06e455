"""Sweeps: many training runs from one config, one table at the end (`crescend-jax sweep`, `crescend-jax analyze`).

    crescend-jax sweep --config=configs/sweeps/ablations.py --workdir=runs/ablations \\
        [--config.seeds="(0,)"] [--config.only="('approach_a','a-no_infonce')"] [--all.train.num_steps=300]
    crescend-jax analyze --workdir=runs/ablations          # or: --runs runs/baseline runs/approach_a [--out=DIR]

**A sweep config** is a Python file whose ``get_config()`` returns `default_sweep_config` filled in:

* ``base``: the training config file every point starts from (a point may name its own ``base``, which is how a
  point swaps the approach: ``model.name`` and its ``model`` section come from that file).
* ``points``: a tuple of dicts ``{"name", "base" (optional), "fields": {dotted field: value} (or nested dicts),
  "grid": {field: values} (optional, crossed with this point), "baseline" (optional: another point, "" = none)}``
  (`point` builds one). ``grid``: ``{field: values}`` crossed with every point (with no points, the grid alone
  names the points). A grid point is named ``<point>-<field>=<value>-...`` (the field's last component).
* ``fixed``: fields set on every point (nested dicts or dotted keys). ``seeds``: every point runs once per seed
  (``train.seed``). ``baseline``: the point every other one is compared with (trained first). ``only``: run just
  these points (and what they depend on). ``extract``: first extract every store the points read (a no-op when
  stored). ``notes``: lines printed and written above the table. ``table_only``: train and evaluate nothing; write
  the table from the runs already finished (a sweep stopped part-way, or run in parts; the points without a finished
  seed are listed as not run, a point with some of its seeds is pooled over those).
* Fields are any field of the training config, dotted (``model.loss.temperature``), checked like ``--config.*``
  overrides (a misspelled field is an error with a suggestion; types are kept). Two fields belong to the sweep:
  ``lr_scaling.rule`` ("none", "linear", "sqrt") and ``lr_scaling.reference_batch`` (default 64): the point's
  ``train.learning_rate`` is taken as the rate at the reference batch and scaled to its ``train.batch_size`` B:
  none: lr; linear: lr * B / B_ref; sqrt: lr * sqrt(B / B_ref) (the resolved rate is in the table and the
  point's config.json). A string value ``"@<point>"`` (e.g. ``model.init_from``) is that point's workdir for the
  same seed; the referenced point runs first (`train.warm_start` copies its parameters).
* Order of application: base config, ``fixed``, ``--all.<field>=value`` from the command line (on every point whose
  config has the field, e.g. ``--all.model.sampler.group_size=8`` leaves the baseline alone; a field no point has
  is an error), the point's fields, its grid values, the learning-rate rule. ``--config.<field>=value`` overrides
  the sweep config itself.

**Running.** Points run one after another, each seed of a point into ``<workdir>/<point>/seed_<s>``: train by
composition folds with ``train.resume=True`` (a killed point continues from its last checkpoint; finished folds are
skipped), then ``evaluate`` against the baseline point of the same seed (paired differences from its
``heldout.npz``). A run whose ``metrics.json`` is newer than every fold's ``done.json`` (and than the baseline's
``heldout.npz``, and holds the baseline comparison) is finished and skipped, so rerunning the same command resumes
an interrupted sweep. Points whose resolved configs are identical (e.g. every learning-rate rule at the reference
batch) are trained once and share their runs (``same_as`` in the table). A point that fails (bad data, a refused
warm start, a NaN loss) is reported and the sweep continues with the points that do not depend on it; the exit
code is then 1. A sweep config mistake is found before anything is trained (exit 2).

**Several devices or hosts.** Each point's training uses the whole device mesh, exactly as ``crescend-jax train``
does (data-parallel over every device of every process; on several hosts, start the same sweep command on every
host with the ``train.distributed`` settings or the CRESCEND_* environment, e.g. via ``--all.train.distributed.
...``). Points never run side by side on disjoint device subsets: the trainer builds its mesh from all devices, so a
point too small to fill the mesh simply runs with a small per-device batch. Nothing here has been measured on
several hosts; only process 0 writes the sweep's table.

**At the end** (also after a failure) the sweep writes into its workdir: ``results.json`` (everything), ``results.csv``
and ``results.md`` (one row per point, see `crescend_jax.evaluate.sweep_report`), ``runs.csv`` (one row per seed),
``plot_<field>.png`` (accuracy against each swept numeric field) and ``dimensions.md/.png/.json``
(`crescend_jax.evaluate.per_dimension`). **Seeds are pooled** by averaging each pair's outcome over the seeds
(`crescend_jax.evaluate.seed_pooling`): the table's accuracy is the mean over seeds of each seed's held-out pairwise
accuracy, its interval a bootstrap that resamples the held-out music (``eval.bootstrap``, two-stage by default)
and the seeds, and the seed-to-seed standard deviation is a separate column; the paired differences to the baseline
(its seeds averaged the same way) and to the ridge reference share the replicate draws. ``runs.csv`` keeps each
seed's own interval.

**Modules**, one job each: `language` (the sweep config, one expanded point, where its runs live), `learning_rate`
(the rules), `expand` (sweep config -> points in run order), `finished` (is a run up to date), `run` (the points one
after another), `results` (seeds pooled into the tables), `main` (the two commands' flags, absl).
"""

from crescend_jax.sweeps.language import APPROACH_FILES, default_sweep_config, existing_approaches, point

__all__ = ["APPROACH_FILES", "default_sweep_config", "existing_approaches", "point"]
