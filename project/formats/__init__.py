"""Date formats of the host project (``FORMAT_MODULE_PATH``): the ops pages' one moment format."""
