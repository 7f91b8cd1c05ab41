"""``blockwise.daisy`` is PyPI's ``daisy`` here (see ``__init__.py``)."""

import sys

import daisy

sys.modules[__name__] = daisy
