"""Generated Python code for the Fairy wire contract (``proto/fairy/v1/fairy.proto``)."""
