"""Models, one file per family; importing this package registers them."""

from rankstream.models import hstu, sasrec  # noqa: F401  (registration)
