"""Converters from public optic-disc datasets, as published, to locseg's canonical layout.

One module per layout, each with ``HELP``, ``add_arguments(parser)`` and ``prepare(args)``
(called by ``python -m locseg.prepare NAME RAW_DIR OUT_DIR``); shared machinery in
:mod:`locseg.data.converters.common`. Each module's docstring gives the layout it reads, the
source it was taken from and the variations it tolerates.
"""

NAMES = ("drishti", "idrid", "refuge", "rimone", "folder")
