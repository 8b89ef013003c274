"""The wire protocols: the shell text each kind of command sends to a server, built with the one
seam's quoting (`seam`), beside the constants its reader shares."""
